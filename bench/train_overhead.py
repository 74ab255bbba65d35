"""What does ftpipe's training core cost over plain PyTorch and torch DDP, with and without Ray?

One run, the same model (the packaged MiniLM), SST-2 rows, batch and step count on every path:

1. a bare PyTorch loop: AdamW, the same micro-batches and gradient accumulation, nothing else;
   alone, then two at once (one per core), the way two workers share the machine;
2. our core (ftpipe.train.loop) in this process, without Ray (DeepSpeed ZeRO-0, one rank);
3. our core under Ray Train (`ftpipe train`'s path) with 1 worker, then 2: one worker shows
   Ray's own cost, two add the gradient all-reduce;
4. plain torch DDP in 2 processes (gloo), on the rows our 2 workers read: the headline is
   Ray Train's 2 workers against it (Ray Train's own anchor is "within 2.5% of torch DDP");
5. our core under Ray Train with 2 workers again, its gradients reduced by DeepSpeed's
   flatten-and-copy instead of the core's in-place average (ftpipe.train.reduction).

Paths 4, 3 (2 workers) and 5 run back to back, `--repeats` times in alternating order, so the
machine's drift falls on all three alike. Every path trains on one core per worker (torch
threads 1), so per-worker samples/s compare directly. Throughput is steady state: the steps
after the first `--warmup`, timed the same way on every path. The warm-up steps are reported
beside it, because that is where start-up lands (a fresh process's first steps, and under Ray
the actors still starting on the same cores); start-up itself (Ray, workers, model load,
DeepSpeed init) and the evaluations and checkpoints are reported apart.

Usage: .venv/bin/python bench/train_overhead.py [--steps 20] [--warmup 4] [--micro 16]
    [--accumulation 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from ddp_baseline import (
    Plan,
    Speed,
    allreduce_seconds,
    ddp_speed,
    mean,
    plain_loop,
    plain_process,
    ray_worker_with_deepspeeds_reduction,
)
from report import hardware_summary, write_section

from ftpipe.config import load_config
from ftpipe.data import run_prep
from ftpipe.data.prepared import load_prepared
from ftpipe.train.loop import RankContext, train
from ftpipe.train.model import load_base_model

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"


def core_speed(history: list[dict], args: argparse.Namespace, workers: int, wall: float) -> Speed:
    """Per-worker samples/s from the core's evaluations at step `--warmup` and at the end.

    Each evaluation carries the run's cumulative training samples/s, which counts training
    steps only (no evaluation or checkpoint), so two of them give the time between.
    """
    rows_per_step = args.micro * args.accumulation
    at = {entry["step"]: entry for entry in history}
    first, last = at[args.warmup], history[-1]

    def seconds(entry: dict) -> float:
        return entry["step"] * rows_per_step * workers / entry["train_samples_per_second"]

    return Speed(
        warmup=args.warmup * rows_per_step / seconds(first),
        steady=(last["step"] - args.warmup) * rows_per_step / (seconds(last) - seconds(first)),
        outside=wall - seconds(last),
    )


def config_for(args: argparse.Namespace, workdir: Path, workers: int) -> Any:
    """The run's config for `workers` Ray workers (or the core in this process with 1)."""
    # An evaluation at every warm-up multiple records the cumulative throughput at the end of
    # the warm-up; 64 evaluation rows keep those evaluations short.
    return load_config(
        REPO / "configs/sst2.yaml",
        [f"data.output_dir={workdir / 'prep'}", "data.max_eval_rows=64",
         f"train.output_dir={workdir / 'train'}", "strategy.name=full",
         f"train.num_workers={workers}", f"train.micro_batch_size={args.micro}",
         f"train.batch_size={args.micro * args.accumulation * workers}",
         f"train.max_steps={args.steps}", f"train.eval_every_steps={args.warmup}",
         "train.log_every_steps=1000", "train.cpus_per_worker=1"],
    )  # fmt: skip


def ray_speed(
    config: Any, args: argparse.Namespace, deepspeeds_reduction: bool = False
) -> tuple[Speed, float]:
    """Our core on Ray Train: per-worker speed and the last evaluation's loss.

    With `deepspeeds_reduction`, DeepSpeed reduces the gradients instead of the core.
    """
    from ftpipe.train import ray_train

    # build_trainer hands TorchTrainer the module's `_worker`: swapped for this run only.
    patched = mock.patch.object(ray_train, "_worker", ray_worker_with_deepspeeds_reduction)
    started = time.perf_counter()
    with patched if deepspeeds_reduction else nullcontext():
        outcome = ray_train.train_ray(config)
    wall = time.perf_counter() - started
    speed = core_speed(outcome.history, args, config.train.num_workers, wall)
    return speed, outcome.history[-1]["loss"]


@dataclass
class Results:
    """Every path's per-worker speed, and what the reduction paragraph needs."""

    speeds: dict[str, Speed]
    losses: dict[str, list[float]]  # 2 workers' last evaluation loss, per reduction
    reduce: dict[str, float]  # one all-reduce timed alone, per way
    parameters: int


def pair_runs(
    args: argparse.Namespace, workdir: Path, plan: Plan
) -> tuple[dict[str, Speed], dict[str, list[float]]]:
    """Torch DDP, then Ray Train 2 workers each way, alternating order at every repeat.

    Returns:
        Each path's mean speed, and each Ray path's last evaluation losses.
    """
    two = config_for(args, workdir, 2)
    speeds: dict[str, list[Speed]] = {"ddp": [], "ray 2": [], "deepspeed": []}
    losses: dict[str, list[float]] = {"ray 2": [], "deepspeed": []}
    runs = {
        "ddp": lambda: (ddp_speed(two, plan, workdir), None),
        "ray 2": lambda: ray_speed(two, args),
        "deepspeed": lambda: ray_speed(two, args, deepspeeds_reduction=True),
    }
    for repeat in range(args.repeats):
        for name in list(runs)[:: 1 if repeat % 2 == 0 else -1]:
            speed, loss = runs[name]()
            speeds[name].append(speed)
            if loss is not None:
                losses[name].append(loss)
    return {name: mean(s) for name, s in speeds.items()}, losses


def measure(args: argparse.Namespace, workdir: Path) -> Results:
    """Run every path; the bare loop runs first and last, so drift cancels in its mean."""
    plan: Plan = (args.steps, args.warmup, args.micro, args.accumulation)
    single = config_for(args, workdir, 1)
    data = load_prepared(run_prep(single).output_dir)
    bare_first = plain_loop(single, data, plan)
    # Two bare loops at once, one per core: the baseline that shares the machine the way two
    # Ray workers do (memory bandwidth, caches), without Ray or the all-reduce.
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        bare_pair = mean(pool.map(plain_process, [(single.model_dump(mode="json"), plan)] * 2))

    model = load_base_model(single, data.labels)[0]
    parameters = sum(p.numel() for p in model.parameters())
    reduce = allreduce_seconds(model, workdir)
    del model

    started = time.perf_counter()
    result = train(single, data, RankContext(), lambda metrics, staging: None)
    core = core_speed(result.state.history, args, 1, time.perf_counter() - started)
    ray1 = ray_speed(single, args)[0]
    paired, losses = pair_runs(args, workdir, plan)
    bare = mean([bare_first, plain_loop(single, data, plan)])
    speeds = {"bare": bare, "bare pair": bare_pair, "core": core, "ray 1": ray1, **paired}
    return Results(speeds, losses, reduce, parameters)


def render(args: argparse.Namespace, results: Results) -> str:
    """The section body: the table, the headline ratio and what the reduction costs."""
    s, reduce = results.speeds, results.reduce
    bare = s["bare"].steady
    runs = f"mean of {args.repeats} alternated runs" if args.repeats > 1 else "one run"

    def row(path: str, workers: int, speed: Speed) -> str:
        other = "-" if speed.outside is None else f"{speed.outside:.0f} s"
        return (f"| {path} | {workers} | {speed.steady:.2f} | {speed.steady / bare:.2f} "
                f"| {speed.warmup:.2f} | {other} |")  # fmt: skip

    step_seconds = args.micro * args.accumulation / bare
    ds_losses, in_place_losses = results.losses["deepspeed"], results.losses["ray 2"]
    spread = max(ds_losses + in_place_losses) - min(ds_losses + in_place_losses)
    return "\n".join([
        f"The packaged all-MiniLM-L6-v2, full fine-tuning, SST-2 rows at max_length 64; "
        f"{args.steps} optimizer steps of {args.micro} rows x {args.accumulation} "
        "accumulated micro-batches per worker; one CPU core (torch threads 1) per worker. "
        f"Steady state is steps {args.warmup + 1} to {args.steps}, timed the same way on "
        f"every path; the first {args.warmup} steps are shown apart. Torch DDP and the two "
        f"2-worker Ray paths ran back to back ({runs}).",
        "",
        "| path | workers | samples/s per worker, steady | vs bare loop | "
        f"first {args.warmup} steps | start-up, evaluations, checkpoints |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        row("bare PyTorch loop (mean of first and last)", 1, s["bare"]),
        row("bare PyTorch loop, 2 processes at once", 2, s["bare pair"]),
        row("ftpipe core, no Ray", 1, s["core"]),
        row("ftpipe core on Ray Train", 1, s["ray 1"]),
        row(f"plain torch DDP, gloo ({runs})", 2, s["ddp"]),
        row(f"ftpipe core on Ray Train ({runs})", 2, s["ray 2"]),
        row(f"ftpipe core on Ray Train, DeepSpeed's reduction ({runs})", 2, s["deepspeed"]),
        "",
        f"**Ray Train's 2 workers against torch DDP's 2 processes: "
        f"{s['ray 2'].steady / s['ddp'].steady:.2f}x per worker** (target: at least 0.95; Ray "
        "Train's own anchor is within 2.5% of torch DDP). With DeepSpeed's own reduction instead "
        f"of the core's in-place average: {s['deepspeed'].steady / s['ddp'].steady:.2f}x. "
        "Against two bare loops sharing the machine: "
        f"{s['ray 2'].steady / s['bare pair'].steady:.2f}x.",
        "",
        "What two workers add is the gradient all-reduce at every step, which a single loop "
        "does not do. Timed alone between two processes (gloo, the model's "
        f"{results.parameters:,} fp32 gradients): {reduce['flattened']:.3f} s the way "
        "DeepSpeed's ZeRO-0 does it (flatten into one buffer, reduce, copy back), "
        f"{reduce['in place']:.3f} s reduced in place, against {step_seconds:.3f} s for a steady "
        f"step of the bare loop ({reduce['flattened'] / step_seconds:.0%} and "
        f"{reduce['in place'] / step_seconds:.0%} of it). Both reduce after the step's last "
        "backward pass; torch DDP instead reduces buckets while that pass runs. The numerics "
        f"check: the 2 workers' loss at step {args.steps} (the last evaluation) is "
        f"{ds_losses[0]:.8f} with DeepSpeed's reduction and {in_place_losses[0]:.8f} reduced "
        f"in place (largest difference over all their runs: {spread:.1e}).",
        "",
        f"The first {args.warmup} steps are where start-up leaks into training: a fresh "
        "process's first steps, and under Ray its actors still starting on the same cores. "
        "The last column is the wall time outside training steps: starting Ray and the "
        "workers, loading the model, DeepSpeed's set-up, the evaluations, the checkpoints and "
        "the export.",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="Optimizer steps per path.")
    parser.add_argument("--warmup", type=int, default=4, help="Steps left out of steady state.")
    parser.add_argument("--micro", type=int, default=16, help="Rows per forward pass.")
    parser.add_argument("--accumulation", type=int, default=4, help="Micro-batches per step.")
    parser.add_argument("--repeats", type=int, default=2,
                        help="Runs of torch DDP and the 2-worker Ray paths.")  # fmt: skip
    args = parser.parse_args()
    if not (SST2 / "train.tsv").exists():
        sys.exit(f"SST-2 not found at {SST2}; this benchmark needs ../shared/data/sst2.")
    if not 0 < args.warmup < args.steps:
        sys.exit(f"--warmup must be between 0 and --steps ({args.steps}), exclusive.")
    if args.repeats < 1:
        sys.exit("--repeats must be at least 1.")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    body = render(args, measure(args, Path(tempfile.mkdtemp(prefix="bench-overhead-"))))
    write_section(
        "train-overhead",
        "Training overhead: bare loop and torch DDP vs ftpipe core vs Ray Train",
        " ".join(["bench/train_overhead.py", *sys.argv[1:]]),
        hardware_summary(),
        body,
    )
    print(body)


if __name__ == "__main__":
    main()
