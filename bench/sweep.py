"""Full grid versus ASHA over the same space, on an SST-2 subsample with the packaged MiniLM.

Both sweeps run `ftpipe tune` over learning rate x freeze depth, side by side in one run:

* grid: every trial to the end (`tune.scheduler=none`);
* ASHA: the same grid of points, stopped at rungs (`tune.scheduler=asha`).

It reports the compute each needed (trial-epochs and wall time) and whether ASHA's best is
within 0.5 points of the grid's best. Target: ASHA needs at most 1/3 of the grid's compute.

Usage: .venv/bin/python bench/sweep.py [--train-rows 600] [--eval-rows 300] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from report import hardware_summary, write_section

REPO = Path(__file__).resolve().parents[1]
FTPIPE = str(Path(sys.executable).with_name("ftpipe"))
SPACE = {
    "train.lr": "choice([3.0e-6, 3.0e-5, 1.0e-4, 3.0e-4])",
    "strategy.freeze_layers": "choice([0, 3])",
}


def sweep(config: Path, workdir: Path, name: str, scheduler: str) -> tuple[pd.DataFrame, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run(
        [FTPIPE, "tune", "-c", str(config), f"tune.scheduler={scheduler}",
         f"tune.output_dir={workdir / name}"],
        cwd=REPO, env=env, check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    results = pd.read_csv(next((workdir / name).glob("sweep-*/results.csv")))
    return results, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval-rows", type=int, default=300)
    args = parser.parse_args()
    if not (REPO.parent / "shared/data/sst2/train.tsv").exists():
        sys.exit("SST-2 not found at ../shared/data/sst2; this benchmark needs it.")
    workdir = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    raw = yaml.safe_load((REPO / "configs/sst2.yaml").read_text())
    raw["data"] |= {"max_train_rows": args.train_rows, "max_eval_rows": args.eval_rows,
                    "output_dir": str(workdir / "prep")}  # fmt: skip
    raw["strategy"] = {"name": "freeze"}
    raw["train"] |= {
        "epochs": args.epochs, "num_workers": 1, "cpus_per_worker": 1, "batch_size": 16,
        "eval_every_steps": max(1, args.train_rows // 16 // 4), "log_every_steps": 1000,
        "output_dir": str(workdir / "train"), "cache_dir": str(workdir / "cache"),
    }  # fmt: skip
    raw["tune"] = {"search": "grid", "num_trials": 1, "max_concurrent_trials": 2,
                   "grace_period": 1, "reduction_factor": 3, "final": "none",
                   "search_space": SPACE}  # fmt: skip
    config = workdir / "sweep.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([FTPIPE, "prep", "-c", str(config)], cwd=REPO, env=env, check=True)

    runs = {name: sweep(config, workdir, name, name) for name in ("none", "asha")}
    grid, asha = runs["none"][0], runs["asha"][0]
    best_grid, best_asha = grid["best_macro_f1"].max(), asha["best_macro_f1"].max()
    epochs = {name: results["last_epoch"].sum() for name, (results, _) in runs.items()}
    ratio = epochs["asha"] / epochs["none"]
    stopped = int((asha["stop_reason"] == "stopped by ASHA").sum())
    body = "\n".join(
        [
            f"`ftpipe tune` on {args.train_rows} SST-2 training rows and {args.eval_rows} dev "
            f"rows (stratified samples), packaged MiniLM, strategy freeze, {args.epochs} epochs "
            "per trial, evaluated every quarter epoch; the grid of learning rate "
            f"{SPACE['train.lr']} x freeze depth {SPACE['strategy.freeze_layers']} "
            f"({len(grid)} points), 2 trials at a time, one CPU core each.",
            "",
            "| sweep | trials | trial-epochs | wall time | best dev macro-F1 | stopped early |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            f"| full grid | {len(grid)} | {epochs['none']:.1f} | {runs['none'][1]:.0f} s | "
            f"{best_grid:.3f} | 0 |",
            f"| ASHA (grace 1, factor 3) | {len(asha)} | {epochs['asha']:.1f} | "
            f"{runs['asha'][1]:.0f} s | {best_asha:.3f} | {stopped} |",
            "",
            f"ASHA used {ratio:.2f}x the grid's trial-epochs and "
            f"{runs['asha'][1] / runs['none'][1]:.2f}x its wall time; its best is "
            f"{(best_grid - best_asha) * 100:+.1f} points from the grid's best "
            f"({'within' if best_grid - best_asha <= 0.005 else 'outside'} the 0.5-point "
            "tolerance). Target: at most 1/3 of the grid's compute.",
        ]
    )
    for name in ("none", "asha"):
        for plot in ("metric_vs_lr.png", "trials.png"):
            source = next((workdir / name).glob(f"sweep-*/{plot}"))
            shutil.copy(source, REPO / "docs" / f"sweep-{name}-{plot}")
    body += (
        "\n\n![grid: metric vs lr](sweep-none-metric_vs_lr.png) "
        "![ASHA: trials](sweep-asha-trials.png)"
    )
    write_section("sweep", "Sweeps: full grid vs ASHA", "bench/sweep.py", hardware_summary(), body)
    print(body)


if __name__ == "__main__":
    main()
