"""What does ftpipe's training core cost over a bare PyTorch loop, with and without Ray?

One run, three paths, the same model (the packaged MiniLM), SST-2 rows, batch and step count:

1. a bare PyTorch loop: AdamW, the same micro-batches and gradient accumulation, nothing else;
2. our core (ftpipe.train.loop) in this process, without Ray (DeepSpeed ZeRO-0, one rank);
3. our core under Ray Train (`ftpipe train`'s path) with 1 worker, then 2, each on one CPU
   core: one worker shows Ray's own cost, two add the gradient all-reduce.

Every path trains on one core per worker (torch threads 1), so per-worker samples/s compare
directly. Throughput counts only training steps; start-up (Ray, workers, model load,
DeepSpeed init) and the final evaluation and checkpoint are reported apart.

Usage: .venv/bin/python bench/train_overhead.py [--steps 8] [--micro 16] [--accumulation 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from report import hardware_summary, write_section

from ftpipe.config import load_config
from ftpipe.data import run_prep
from ftpipe.data.prepared import batches, load_prepared
from ftpipe.train.batching import rank_order
from ftpipe.train.loop import RankContext, train
from ftpipe.train.model import load_base_model

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"


def bare_loop(config, data, steps: int, micro: int, accumulation: int) -> float:
    """Samples/s of a plain loop over exactly the rows our core reads."""
    torch.manual_seed(config.seed)
    model, _ = load_base_model(config, data.labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    split = data.splits["train"]
    order = rank_order(len(split), config.seed, 0, 0, 1)[: steps * micro * accumulation]
    model.train()
    started = time.perf_counter()
    for i, (_, batch) in enumerate(batches(split, micro, 0, order)):
        (model(**batch).loss / accumulation).backward()
        if (i + 1) % accumulation == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
    return len(order) / (time.perf_counter() - started)


def _bare_process(args: tuple[dict, int, int, int]) -> float:
    """One bare loop in its own process (torch threads 1), for the concurrent baseline."""
    from ftpipe.config.load import validate_config

    raw, steps, micro, accumulation = args
    torch.set_num_threads(1)
    config = validate_config(raw)
    data = load_prepared(config.data.output_dir)
    return bare_loop(config, data, steps, micro, accumulation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="Optimizer steps per path.")
    parser.add_argument("--micro", type=int, default=16, help="Rows per forward pass.")
    parser.add_argument("--accumulation", type=int, default=4, help="Micro-batches per step.")
    args = parser.parse_args()
    if not (SST2 / "train.tsv").exists():
        sys.exit(f"SST-2 not found at {SST2}; this benchmark needs ../shared/data/sst2.")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    rows_per_step = args.micro * args.accumulation

    def config_for(workers: int):
        return load_config(
            REPO / "configs/sst2.yaml",
            [f"data.output_dir={workdir / 'prep'}", f"train.output_dir={workdir / 'train'}",
             "strategy.name=full", f"train.num_workers={workers}",
             f"train.micro_batch_size={args.micro}",
             f"train.batch_size={rows_per_step * workers}", f"train.max_steps={args.steps}",
             "train.log_every_steps=1000", "train.cpus_per_worker=1"],
        )  # fmt: skip

    single = config_for(1)
    data = load_prepared(run_prep(single).output_dir)

    bare = bare_loop(single, data, args.steps, args.micro, args.accumulation)
    # Two bare loops at once, one per core: the baseline that shares the machine the way two
    # Ray workers do (memory bandwidth, caches), without Ray or the all-reduce.
    job = (single.model_dump(mode="json"), args.steps, args.micro, args.accumulation)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        bare_pair = sum(pool.map(_bare_process, [job, job])) / 2
    started = time.perf_counter()
    core = train(single, data, RankContext(), lambda metrics, staging: None)
    core_wall = time.perf_counter() - started

    from ftpipe.train.ray_train import train_ray

    rows = args.steps * rows_per_step
    ray_rows = []
    for workers in (1, 2):
        started = time.perf_counter()
        outcome = train_ray(config_for(workers))
        wall = time.perf_counter() - started
        total = outcome.final_metrics["train_samples_per_second"]
        per_worker = total / workers
        ray_rows.append(
            f"| ftpipe core on Ray Train | {workers} | {per_worker:.2f} | "
            f"{per_worker / bare:.2f} | {wall - workers * rows / total:.0f} s |"
        )

    body = "\n".join(
        [
            f"The packaged all-MiniLM-L6-v2, full fine-tuning, SST-2 rows at max_length 64; "
            f"{args.steps} optimizer steps of {args.micro} rows x {args.accumulation} "
            "accumulated micro-batches per worker; one CPU core (torch threads 1) per worker.",
            "",
            "| path | workers | samples/s per worker | vs bare loop | start-up + final eval |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| bare PyTorch loop | 1 | {bare:.2f} | 1.00 | - |",
            f"| bare PyTorch loop, 2 processes at once | 2 | {bare_pair:.2f} | "
            f"{bare_pair / bare:.2f} | - |",
            f"| ftpipe core, no Ray | 1 | {core.samples_per_second:.2f} | "
            f"{core.samples_per_second / bare:.2f} | "
            f"{core_wall - core.train_seconds:.0f} s |",
            *ray_rows,
            "",
            f"Ray's two workers together: {total:.2f} samples/s "
            f"({total / bare:.2f}x the bare loop on one core; {per_worker / bare_pair:.2f}x per "
            "worker against two bare loops sharing the machine). Target: per-worker throughput "
            "under Ray at least 0.95 of the bare loop's. Start-up is reported apart: it covers "
            "starting Ray and the workers, loading the model, DeepSpeed's set-up, and the "
            "final evaluation, checkpoint and export.",
        ]
    )
    write_section(
        "train-overhead",
        "Training overhead: bare loop vs ftpipe core vs Ray Train",
        "bench/train_overhead.py",
        hardware_summary(),
        body,
    )
    print(body)


if __name__ == "__main__":
    main()
