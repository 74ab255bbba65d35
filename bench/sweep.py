"""Full grid versus ASHA over the same space, on an SST-2 subsample with the packaged MiniLM.

Both sweeps run `ftpipe tune` over learning rate x freeze depth, side by side in one run:

* grid: every trial to the end (`tune.scheduler=none`);
* ASHA: the same points in the same order, stopped at rungs (`tune.scheduler=asha`).

The measure is the compute each sweep needs to reach a config within 0.5 points (0.005
macro-F1) of the grid's best. A grid knows its best only when every trial has ended, so its
compute is the whole sweep; ASHA reaches the target if the best of its whole sweep is within
the tolerance. Compute is counted in trial-epochs (all trials together, from each trial's
evaluations in Tune's result.json) and in wall time. Target: ASHA needs at most 1/3 of the
grid's compute. The anytime view (compute until the first evaluation within the tolerance
arrived) is reported beside it.

Training is deterministic per config and seed on CPU, so a grid point follows the same
trajectory in both sweeps until ASHA stops it; the bench checks this.

Usage: .venv/bin/python bench/sweep.py [--train-rows 1536] [--eval-rows 872] [--epochs 3]
    [--evals-per-epoch 3] [--grace 1] [--reduction 3] [--dry-run]
    [--report WORKDIR | --resume WORKDIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from report import hardware_summary, write_section

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
FTPIPE = str(Path(sys.executable).with_name("ftpipe"))
LRS = [1.0e-6, 1.0e-5, 3.0e-5, 1.0e-4, 3.0e-4, 1.0e-3]
FREEZE = [0, 3]
ORDER_SEED = 42  # the config's seed; fixed before any run
LR, DEPTH = "train.lr", "strategy.freeze_layers"
NAMES = {"none": "full grid", "asha": "ASHA"}
BATCH = 16
SLOTS = 2  # trials at a time: one per CPU core


@dataclass
class Sweep:
    """One finished `ftpipe tune`: its per-evaluation timeline and totals."""

    directory: Path
    metric: str
    started: float  # Unix time the command was launched
    seconds: float  # the command's wall time
    results: pd.DataFrame  # results.csv: one row per trial
    reports: pd.DataFrame  # one row per evaluation (see timeline)
    best: float  # best.json: what the sweep returns
    best_config: dict


def progress(reports: pd.DataFrame, moment: float) -> float:
    """Trial-epochs done by all trials together at `moment`."""
    total = 0.0
    for _, trial in reports.groupby("trial"):
        times = np.r_[trial["training_start"].iloc[0], trial["time"].to_numpy()]
        epochs = np.r_[0.0, trial["epoch"].to_numpy()]
        total += float(np.interp(moment, times, epochs, left=0.0))
    return total


def total_epochs(reports: pd.DataFrame) -> float:
    return float(reports.groupby("trial")["epoch"].max().sum())


def timeline(directory: Path, metric: str) -> pd.DataFrame:
    """Every evaluation of every trial, with its wall-clock time, from Tune's result.json.

    Tune stamps each result with whole seconds (`timestamp`) and with the trial's running time
    (`time_total_s`, exact); a trial's start is where all its `timestamp - time_total_s`
    windows overlap, and each evaluation's time is that start plus its `time_total_s`. The
    first stretch also holds start-up (Ray Train worker, model load), which trains nothing:
    training is taken to start one evaluation interval (the second stretch's length, scaled
    by epochs) before the first evaluation.
    """
    rows = []
    for path in sorted(directory.glob("*/result.json")):
        results = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        results = [r for r in results if metric in r and r.get("epoch") is not None]
        if not results:
            continue
        offsets = np.array([r["timestamp"] - r["time_total_s"] for r in results])
        start = (offsets.max() + offsets.min() + 1) / 2
        training_start = start
        if len(results) > 1:
            first, second = results[0], results[1]
            per_epoch = (second["time_total_s"] - first["time_total_s"]) / (
                second["epoch"] - first["epoch"]
            )
            training_start = max(start, start + first["time_total_s"] - per_epoch * first["epoch"])
        for r in results:
            rows.append({"trial": path.parent.name, "lr": r["config"][LR],
                         "depth": r["config"][DEPTH], "iteration": r["training_iteration"],
                         "epoch": r["epoch"], "value": r[metric],
                         # a class no prediction went to has F1 0: the point predicts one class
                         "one_class": any(v == 0 for k, v in r.items() if k.startswith("f1/")),
                         "training_start": training_start,
                         "time": start + r["time_total_s"]})  # fmt: skip
    if not rows:
        raise SystemExit(f"No trial of {directory} left a result.json with {metric}.")
    return pd.DataFrame(rows).sort_values("time", ignore_index=True)


def same_trajectories(grid: Sweep, asha: Sweep) -> tuple[int, int]:
    """Evaluations that both sweeps made for the same grid point, and how many differ."""
    keys = ["lr", "depth", "iteration"]
    both = grid.reports.merge(asha.reports, on=keys, suffixes=("_grid", "_asha"))
    differ = int((both["value_grid"] - both["value_asha"]).abs().gt(1e-9).sum())
    return len(both), differ


def plot_reach(sweeps: dict[str, Sweep], target: float, path: Path) -> None:
    """Best metric so far against cumulative trial-epochs and wall time, per sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_epochs, by_time) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, sweep in sweeps.items():
        reports = sweep.reports
        best = reports["value"].cummax()
        epochs = [progress(reports, t) for t in reports["time"]]
        seconds = reports["time"] - sweep.started
        by_epochs.step(epochs, best, where="post", label=NAMES[name], marker=".")
        by_time.step(seconds, best, where="post", label=NAMES[name], marker=".")
    for axes in (by_epochs, by_time):
        axes.axhline(target, color="grey", linestyle="--", linewidth=1,
                     label="grid's best - 0.5 points")  # fmt: skip
        axes.grid(alpha=0.3)
    metric = next(iter(sweeps.values())).metric
    by_epochs.set_xlabel("trial-epochs, all trials together")
    by_epochs.set_ylabel(f"best dev {metric} so far")
    by_time.set_xlabel("wall time since the sweep started (s)")
    by_epochs.legend(fontsize=8, loc="lower right")
    figure.suptitle("Best so far against compute; each line ends where its sweep ended")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_sweep(config: Path, workdir: Path, scheduler: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    output = workdir / scheduler
    started, clock = time.time(), time.perf_counter()
    subprocess.run(
        [FTPIPE, "tune", "-c", str(config), f"tune.scheduler={scheduler}",
         f"tune.output_dir={output}"],
        cwd=REPO, env=env, check=True,
    )  # fmt: skip
    clocks = {"started": started, "seconds": time.perf_counter() - clock}
    (output / "clock.json").write_text(json.dumps(clocks))


def load_sweep(workdir: Path, scheduler: str) -> Sweep:
    output = workdir / scheduler
    directory = next(output.glob("sweep-*/"))
    best = json.loads((directory / "best.json").read_text())
    metric = best["metric"]
    clocks = json.loads((output / "clock.json").read_text())
    results = pd.read_csv(directory / "results.csv")
    failed = results[results["stop_reason"].astype(str).str.startswith("error")]
    if len(failed):
        sys.exit(f"{len(failed)} trials of {directory} failed; see its results.csv.")
    return Sweep(directory, metric, clocks["started"], clocks["seconds"],
                 results, timeline(directory, metric), best["best"],
                 best["config"])  # fmt: skip


def prepare(args: argparse.Namespace, workdir: Path) -> None:
    """The sweep config and its prep, in `workdir`."""
    lrs = [float(v) for v in args.lrs.split(",")] if args.lrs else LRS
    depths = [int(v) for v in args.freeze.split(",")] if args.freeze else FREEZE
    order = [lrs[i] for i in np.random.default_rng(ORDER_SEED).permutation(len(lrs))]
    space = {LR: f"choice({order})", DEPTH: f"choice({depths})"}
    raw = yaml.safe_load((REPO / "configs/sst2.yaml").read_text())
    # The sweep selects on the dev set, as it always has (the config keeps dev as test).
    raw["data"] |= {"max_train_rows": args.train_rows, "max_eval_rows": args.eval_rows,
                    "output_dir": str(workdir / "prep"), "eval": raw["data"]["test"],
                    "test": None}  # fmt: skip
    raw["strategy"] = {"name": "freeze"}
    # Its own MLflow database: the repo's mlflow.db is shared with whatever else runs here.
    raw["registry"] = raw.get("registry", {}) | {"tracking_uri": f"sqlite:///{workdir}/mlflow.db"}
    raw["train"] |= {
        "epochs": args.epochs, "num_workers": 1, "cpus_per_worker": 1, "batch_size": BATCH,
        "eval_every_steps": max(1, args.train_rows // BATCH // args.evals_per_epoch),
        "log_every_steps": 1000,
        "output_dir": str(workdir / "train"), "cache_dir": str(workdir / "cache"),
    }  # fmt: skip
    raw["tune"] = {"search": "grid", "num_trials": 1, "max_concurrent_trials": SLOTS,
                   "grace_period": args.grace / args.evals_per_epoch,  # in epochs
                   "reduction_factor": args.reduction,
                   "final": "none", "search_space": space}  # fmt: skip
    config = workdir / "sweep.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([FTPIPE, "prep", "-c", str(config)], cwd=REPO, env=env, check=True)
    rows = json.loads((workdir / "prep" / "stats.json").read_text())["splits"]["train"]["rows"]
    if (rows // BATCH) % args.evals_per_epoch:
        sys.exit(f"Prep kept {rows} training rows: {rows // BATCH} steps per epoch, not a "
                 f"multiple of {args.evals_per_epoch}; adjust --train-rows.")  # fmt: skip


def number(value: str | float) -> float | int:
    """YAML 1.1 reads 1e-05 as a string."""
    return value if isinstance(value, (int, float)) else float(value)


def at_point(reports: pd.DataFrame, lr: float, depth: int) -> pd.DataFrame:
    """The evaluations of one grid point."""
    return reports[(reports["lr"] == lr) & (reports["depth"] == depth)]


def first_within(sweep: Sweep, target: float) -> dict | None:
    """The first evaluation at or above `target`, and the compute spent until it arrived."""
    reports = sweep.reports
    hits = reports[reports["value"] >= target - 1e-9]
    if hits.empty:
        return None
    first = hits.loc[hits["time"].idxmin()]
    return {"trial_epochs": progress(reports, first["time"]),
            "seconds": first["time"] - sweep.started, "lr": first["lr"],
            "depth": first["depth"], "epoch": first["epoch"]}  # fmt: skip


def per_point(grid: Sweep, asha: Sweep, order: list[tuple]) -> list[str]:
    """One row per grid point, in visiting order: its scores, and where ASHA left it."""
    lines = [
        "| # | lr | freeze depth | grid: best | grid: final | ASHA: epochs run | ASHA: best |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for index, (lr, depth) in enumerate(order, 1):
        trial, cut = at_point(grid.reports, lr, depth), at_point(asha.reports, lr, depth)
        ran = f"{cut['epoch'].max():.2f}" if len(cut) else "0"
        if len(cut) and cut["epoch"].max() + 1e-9 < trial["epoch"].max():
            ran += " (stopped)"
        asha_best = f"{cut['value'].max():.3f}" if len(cut) else "-"
        lines.append(f"| {index} | {lr:g} | {depth} | {trial['value'].max():.3f} | "
                     f"{trial.sort_values('epoch')['value'].iloc[-1]:.3f} | {ran} | "
                     f"{asha_best} |")  # fmt: skip
    return lines


def rung_fidelity(grid: Sweep, rungs: list[int]) -> str:
    """How well each rung's scores rank the grid's points by their best (Spearman's rho)."""
    points = grid.reports.groupby(["lr", "depth"])
    best = points["value"].max()
    rhos = []
    for rung in rungs:
        at_rung = grid.reports[grid.reports["iteration"] == rung].set_index(["lr", "depth"])
        rho = at_rung["value"].corr(best.loc[at_rung.index], method="spearman")
        rhos.append(f"{rho:.2f} at rung {rung}")
    return ", ".join(rhos)


def where_cut(grid: Sweep, asha: Sweep, factor: int) -> str:
    """Why ASHA stopped the grid's best point: its score at that rung against the cutoff."""
    top = grid.reports.loc[grid.reports["value"].idxmax()]
    mine = at_point(asha.reports, top["lr"], top["depth"])
    if mine.empty or mine["epoch"].max() + 1e-9 >= grid.reports["epoch"].max():
        return ""
    last = mine.loc[mine["iteration"].idxmax()]
    rung = int(last["iteration"])
    # Asynchronous ASHA compares with the points that reached this rung before it did.
    reports = asha.reports
    before = reports[(reports["iteration"] == rung) & (reports["time"] < last["time"])]
    cutoff = float(np.nanpercentile(before["value"], (1 - 1 / factor) * 100))
    return (f" ASHA stopped the grid's best point (lr {top['lr']:g}, freeze {top['depth']}) at "
            f"rung {rung} (epoch {last['epoch']:.2f}) with {last['value']:.3f}, under the "
            f"cutoff {cutoff:.3f} set by the {len(before)} "
            f"{'point' if len(before) == 1 else 'points'} that had reached the rung before "
            f"it; in the grid the same point went on to {top['value']:.3f} at epoch "
            f"{top['epoch']:.2f}.")  # fmt: skip


def where_spent(asha: Sweep, order: list[tuple]) -> str:
    """Which of ASHA's trial-epochs went to trials it let run to the end, and why."""
    ran = asha.reports.groupby(["lr", "depth"])["epoch"].max()
    full = ran[ran >= ran.max() - 1e-9]
    first = [point for point in order[:SLOTS] if point in full.index]
    return (f"Of its {ran.sum():.1f} trial-epochs, {full.sum():.1f} went to the {len(full)} "
            f"trials that ran to the end, {len(first)} of them among the first {SLOTS} points "
            "visited, which asynchronous ASHA cannot stop: the first trial to reach a rung has "
            "nothing to be compared with.")  # fmt: skip


def standard_error(accuracy: float, rows: int) -> float:
    """A binomial proportion's standard error: the noise in one evaluation's score."""
    return (accuracy * (1 - accuracy) / rows) ** 0.5


def verdict(ratio: float) -> str:
    return "met" if ratio <= 1 / 3 else "not met"


def report(workdir: Path, sweeps: dict[str, Sweep], tolerance: float) -> str:
    """The section's text, from the two sweeps of `workdir`."""
    config = yaml.safe_load((workdir / "sweep.yaml").read_text())
    tune, train = config["tune"], config["train"]
    stats = json.loads((workdir / "prep" / "stats.json").read_text())["splits"]
    train_rows, eval_rows = stats["train"]["rows"], stats["eval"]["rows"]
    every = train["eval_every_steps"]
    per_epoch = train_rows // train["batch_size"] // every
    # The config gives the grace period in epochs; the report counts evaluations.
    grace, factor = round(tune["grace_period"] * per_epoch), tune["reduction_factor"]
    evals = per_epoch * train["epochs"]
    rungs = [grace * factor**k for k in range(8) if grace * factor**k < evals]
    lrs, depths = (
        [number(v) for v in yaml.safe_load(tune["search_space"][path][len("choice(") : -1])]
        for path in (LR, DEPTH)
    )
    order = [(lr, depth) for lr in lrs for depth in depths]

    grid, asha = sweeps["none"], sweeps["asha"]
    metric = grid.metric
    target = grid.best - tolerance
    epochs = {name: total_epochs(s.reports) for name, s in sweeps.items()}
    stopped = int((asha.results["stop_reason"] == "stopped by ASHA").sum())
    reached = asha.best >= target - 1e-9
    gap = (asha.best - grid.best) * 100
    epoch_ratio, wall_ratio = epochs["asha"] / epochs["none"], asha.seconds / grid.seconds

    rows = []
    for name, sweep in sweeps.items():
        label = NAMES[name] if name == "none" else f"ASHA (grace {grace}, factor {factor})"
        cut = stopped if name == "asha" else 0
        within = "-" if name == "none" else ("yes" if reached else "**no**")
        rows.append(f"| {label} | {len(sweep.results)} ({cut}) | {epochs[name]:.1f} | "
                    f"{sweep.seconds:.0f} s | lr {sweep.best_config[LR]:g}, freeze "
                    f"{sweep.best_config[DEPTH]} | {sweep.best:.3f} | {within} |")  # fmt: skip
    if reached:
        where = ("equal to" if abs(gap) < 0.05
                 else f"{abs(gap):.1f} points {'below' if gap < 0 else 'above'}")  # fmt: skip
        outcome = (f"ASHA's best is {where} the grid's, within the tolerance. It needed "
                   f"{epoch_ratio:.2f}x the grid's trial-epochs and {wall_ratio:.2f}x its wall "
                   "time: the 1/3 target is "
                   f"**{verdict(epoch_ratio)}** on trial-epochs and **{verdict(wall_ratio)}** on "
                   f"wall time. {where_spent(asha, order)}")  # fmt: skip
    else:
        outcome = (f"ASHA's best is {abs(gap):.1f} points below the grid's: it **did not reach** "
                   "the tolerance, so the 1/3 target is **not met**, whatever the compute "
                   f"({epoch_ratio:.2f}x the grid's trial-epochs, {wall_ratio:.2f}x its wall "
                   f"time).{where_cut(grid, asha, factor)} Over the whole grid the rungs rank "
                   "points fairly well by how they end (Spearman's rho between the scores at a "
                   f"rung and each point's best: {rung_fidelity(grid, rungs)}), but one "
                   f"evaluation's standard error on {eval_rows} dev rows is "
                   f"{standard_error(grid.best, eval_rows) * 100:.1f} points, as large as the "
                   "gaps between the best few points, and an asynchronous rung that has seen "
                   "few points sets its cutoff from one or two of those noisy scores.")  # fmt: skip

    anytime = []
    for name, sweep in sweeps.items():
        found = first_within(sweep, target)
        anytime.append(
            f"| {NAMES[name]} | did not reach | - | - |" if found is None else
            f"| {NAMES[name]} | {found['trial_epochs']:.1f} | {found['seconds']:.0f} s | "
            f"lr {found['lr']:g}, freeze {found['depth']}, epoch {found['epoch']:.2f} |"
        )  # fmt: skip
    bracket = (
        f" (grace x factor^{len(rungs)}, ASHA's standard bracket)"
        if evals == grace * factor ** len(rungs)
        else ""
    )
    at_rung = grid.reports[grid.reports["iteration"] == grace]
    flat = int(at_rung["one_class"].sum())
    shared, differ = same_trajectories(grid, asha)
    trajectories = (
        "all gave identical scores, so ASHA's trials are the grid's trials, cut short."
        if differ == 0
        else f"{differ} of them differ, so the trajectories are not exactly shared."
    )
    return "\n".join(
        [
            f"`ftpipe tune` on {train_rows} SST-2 training rows (a stratified sample) and all "
            f"{eval_rows} dev rows, packaged MiniLM, strategy freeze, batch "
            f"{train['batch_size']}, {train['epochs']} epochs per trial, evaluated every "
            f"{every} steps ({per_epoch} times per epoch, {evals} per trial). Grid: learning "
            f"rate {', '.join(f'{lr:g}' for lr in sorted(lrs))} x freeze depth {depths} "
            f"({len(order)} points), visited in the same order by both sweeps, {SLOTS} trials "
            f"at a time, one CPU core each. ASHA: `tune.grace_period={grace}`, "
            f"`tune.reduction_factor={factor}`: rungs at steps "
            f"{', '.join(str(r * every) for r in rungs)}, and a trial that passes them runs to "
            f"step {evals * every}{bracket}.",
            "",
            f"**Compute to reach a config within {tolerance * 100:g} points of the grid's "
            "best.** A grid runs every trial to the end and only then knows which is best, so "
            "the compute it needs is the whole sweep. ASHA's answer is likewise the best trial "
            "of its whole sweep; it reaches the target if that answer is within "
            f"{tolerance * 100:g} points ({tolerance} {metric}) of the grid's best "
            f"({grid.best:.3f}).",
            "",
            f"| sweep | trials (stopped early) | trial-epochs | wall time | best config | "
            f"best dev {metric} | within tolerance |",
            "| --- | ---: | ---: | ---: | --- | ---: | --- |",
            *rows,
            "",
            outcome + " Wall time also counts what every trial pays whether stopped or not "
            "(Ray Train start-up, model load, evaluations), which trial-epochs leave out.",
            "",
            "**The anytime view**, for comparison: the compute spent by all trials together "
            "until the first evaluation within the tolerance arrived (a trial still running "
            "counts the part of an epoch it had done). Neither sweep can know at that moment "
            "that the point is good enough; in this view the grid is as lucky as its visiting "
            "order, and ASHA can only save on the points visited before the first good one.",
            "",
            "| sweep | trial-epochs | wall time | first config within tolerance |",
            "| --- | ---: | ---: | --- |",
            *anytime,
            "",
            f"Both sweeps made {shared} evaluations of the same grid points; {trajectories} "
            "Trial-epochs are exact; wall times vary with the machine's other load.",
            "",
            "Why these settings: the learning rates span a first sweep's range from too low to "
            "too high, so there are bad points for early stopping to find; "
            f"{eval_rows} dev rows make the tolerance {tolerance * eval_rows:.1f} rows, not one "
            f"flip; at the first rung ({grace * every} steps) {flat} of {len(order)} points "
            "still predicted one class, so ASHA ranks ties among the slow starters there; the "
            "learning rates are visited in "
            f"a seeded random order (seed {ORDER_SEED}, fixed before running), because "
            "asynchronous ASHA cannot stop the first trials, which have nothing to be compared "
            "with, and a sorted grid would hand it its worst case.",
            "",
            "Per grid point, in visiting order:",
            "",
            *per_point(grid, asha, order),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=1536, help="A multiple of 16 x evals.")
    parser.add_argument("--eval-rows", type=int, default=872, help="872 = all of SST-2 dev.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--evals-per-epoch", type=int, default=3)
    parser.add_argument("--grace", type=int, default=1, help="Evaluations before ASHA's first cut.")
    parser.add_argument("--reduction", type=int, default=3, help="tune.reduction_factor.")
    parser.add_argument("--lrs", help="Comma-separated learning rates (default: the grid).")
    parser.add_argument("--freeze", help="Comma-separated freeze depths (default: 0,3).")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--dry-run", action="store_true", help="Print; leave docs/ alone.")
    parser.add_argument("--report", type=Path, help="Report on a kept WORKDIR; run nothing.")
    parser.add_argument("--resume", type=Path, help="Rerun the sweeps WORKDIR lacks.")
    args = parser.parse_args()
    if args.report:
        workdir = args.report
    elif args.resume:
        workdir = args.resume
        for scheduler in ("none", "asha"):
            if not (workdir / scheduler / "clock.json").exists():
                shutil.rmtree(workdir / scheduler, ignore_errors=True)  # an interrupted sweep
                run_sweep(workdir / "sweep.yaml", workdir, scheduler)
    else:
        if not (REPO.parent / "shared/data/sst2/train.tsv").exists():
            sys.exit("SST-2 not found at ../shared/data/sst2; this benchmark needs it.")
        workdir = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
        prepare(args, workdir)
        for scheduler in ("none", "asha"):
            run_sweep(workdir / "sweep.yaml", workdir, scheduler)
    sweeps = {name: load_sweep(workdir, name) for name in ("none", "asha")}
    body = report(workdir, sweeps, args.tolerance)
    print(body)
    target = sweeps["none"].best - args.tolerance
    plot_reach(sweeps, target, workdir / "sweep-reach.png")
    if args.dry_run:
        print(f"(dry run: outputs in {workdir}; docs/ untouched)")
        return
    for name, sweep in sweeps.items():
        for plot in ("metric_vs_lr.png", "trials.png"):
            shutil.copy(sweep.directory / plot, DOCS / f"sweep-{name}-{plot}")
    shutil.copy(workdir / "sweep-reach.png", DOCS / "sweep-reach.png")
    body += (
        "\n\n![best so far against compute](sweep-reach.png)\n\n"
        "![grid: metric vs lr](sweep-none-metric_vs_lr.png) "
        "![grid: trials](sweep-none-trials.png) "
        "![ASHA: trials](sweep-asha-trials.png)"
    )
    write_section("sweep", "Sweeps: full grid vs ASHA", "bench/sweep.py", hardware_summary(), body)
    print(f"Kept {workdir} (rerun the report with --report {workdir}).")


if __name__ == "__main__":
    main()
