"""Instruction tuning on CPU: training tokens/s with `data.packing` against without.

The same rows three ways, side by side in one process: the IT help-desk conversations of
examples/sft_demo (multi-turn chats of varied length, their assistant turns the targets) on the
demo's tiny Llama built from a config (examples/sft_demo/build_model.py), full fine-tuning for
`--epochs` (3) with the training core (no Ray), batch 16:

1. **unpacked**: each micro-batch padded to its longest conversation (the default);
2. **unpacked, length-grouped**: `train.group_by_length`, the other way to cut padding (it
   changes which rows share a step, so the model sees them in another order);
3. **packed**: `data.packing`, the same micro-batches as 1 packed into sequences of up to
   `data.max_length` tokens with a block-diagonal causal mask.

An epoch trains every row of its whole steps once, and which rows fall outside them is drawn
before any grouping, so all three train on the same rows and the same target tokens. Rates
count training steps only (no evaluation, checkpoint or start-up): target tokens/s (the tokens
the loss covers), real tokens/s (every non-padding token) and computed tokens/s (padding
included). After one discarded warm-up run, each layout runs
`--rounds` times, alternating, and the median is reported, so the machine's drift falls on all
three alike.

Usage: .venv/bin/python bench/sft.py [--rounds 3] [--epochs 3] [--threads 1] [--micro 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from report import hardware_summary, write_section
from runs import REPO

from ftpipe.config import load_config
from ftpipe.data import run_prep
from ftpipe.data.prepared import load_prepared
from ftpipe.train.batching import BatchSource, epoch_padding, rank_order
from ftpipe.train.deepspeed import batch_plan
from ftpipe.train.loop import RankContext, train

DEMO = REPO / "examples" / "sft_demo"
LAYOUTS = {
    "unpacked": (),
    "unpacked, length-grouped": ("train.group_by_length=true",),
    "packed": ("data.packing=true",),
}
"""Each layout's overrides of configs/sft-demo.yaml."""


def target_tokens(config, data) -> int:
    """The target tokens of the run's epochs (the same rows in every layout)."""
    split = data.splits["train"]
    per_rank = batch_plan(config.train, 1).per_rank
    source = BatchSource(split, 0, data.task)  # the ids under padding are never read
    total = 0
    for epoch in range(config.train.epochs):
        rows = rank_order(split.lengths, config.seed, epoch, 0, 1, per_rank)
        labels = source.batch(rows, torch.device("cpu"))["labels"]
        total += int((labels[:, 1:] != -100).sum())  # the first target is never predicted
    return total


def padding(config, data, layout: str) -> float:
    """The share of computed tokens that are padding in this layout's epoch."""
    plan = batch_plan(config.train, 1)
    shares = epoch_padding(data.splits["train"].lengths, config.seed, 1, plan.per_rank,
                           plan.micro, config.train.group_by_length,
                           config.data.max_length)  # fmt: skip
    return shares.packed if layout == "packed" else shares.unpacked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="Runs per layout (median).")
    parser.add_argument("--epochs", type=int, default=3, help="Epochs per run.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads.")
    parser.add_argument("--micro", type=int, default=16, help="Rows per micro-batch.")
    args = parser.parse_args()
    if not (DEMO / "train.jsonl").exists():
        sys.exit(f"The demo conversations are not at {DEMO}; this benchmark needs them.")
    sys.path.insert(0, str(DEMO))
    from build_model import build

    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    model_dir = build(workdir / "model", [DEMO / "train.jsonl", DEMO / "test.jsonl"])
    base = [f"model.name={model_dir}", f"data.train={DEMO / 'train.jsonl'}", "data.test=null",
            f"data.output_dir={workdir / 'prep'}", f"train.epochs={args.epochs}",
            f"train.batch_size={args.micro}", f"train.micro_batch_size={args.micro}",
            "train.log_every_steps=1000"]  # fmt: skip
    configs = {
        layout: load_config(REPO / "configs/sft-demo.yaml",
                            [*base, f"train.output_dir={workdir / str(i)}", *overrides])
        for i, (layout, overrides) in enumerate(LAYOUTS.items())
    }  # fmt: skip
    data = load_prepared(run_prep(configs["unpacked"]).output_dir)
    targets = target_tokens(configs["unpacked"], data)
    # A first run in a process pays for one-time set-up inside its first steps: discard one.
    train(configs["unpacked"], data, RankContext(), lambda metrics, staging: None)
    seconds: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    real: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for round_ in range(args.rounds):
        for layout, config in configs.items():
            result = train(config, data, RankContext(), lambda metrics, staging: None)
            seconds[layout].append(result.train_seconds)
            real[layout].append(result.tokens_per_second)
            print(f"round {round_ + 1} {layout}: {result.train_seconds:.2f} s", flush=True)
    body = report(args, configs, data, targets, seconds, real)
    write_section("sft-packing", "Instruction tuning: packing (CPU)", "bench/sft.py",
                  hardware_summary(), body)  # fmt: skip
    print(body)


def report(args, configs, data, targets, seconds, real) -> str:
    """The docs/benchmarks.md section: the three layouts' rates and packing's speed-up."""
    config = configs["unpacked"]
    split = data.splits["train"]
    lengths = split.lengths
    lines = [
        f"Data: the {len(split)} training conversations of examples/sft_demo (10% held out; "
        f"{lengths.min()} to {lengths.max()} tokens, median {np.median(lengths):.0f}), the "
        f"assistant turns the targets: {targets:,} target tokens in {args.epochs} epochs. "
        "Model: the demo's tiny Llama built from a config (examples/sft_demo/build_model.py), "
        f"full fine-tuning, fp32, batch {config.train.batch_size} in micro-batches of "
        f"{args.micro}, data.max_length {config.data.max_length}, {args.epochs} epochs per run, "
        f"torch threads {args.threads}; median of {args.rounds} runs per layout, alternating, "
        "after a discarded warm-up run.",
        "",
        "| layout | padding share (epoch 1) | train s | target tokens/s | real tokens/s | "
        "computed tokens/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    medians = {}
    for layout, layout_config in configs.items():
        share = padding(layout_config, data, layout)
        median = statistics.median(seconds[layout])
        rate = statistics.median(real[layout])
        medians[layout] = median
        lines.append(
            f"| {layout} | {share:.1%} | {median:.1f} | {targets / median:,.0f} | {rate:,.0f} "
            f"| {rate / (1 - share):,.0f} |"
        )
    lines += [
        "",
        f"Packing trains {medians['unpacked'] / medians['packed']:.2f}x the target tokens/s "
        f"of the unpacked run and {medians['unpacked, length-grouped'] / medians['packed']:.2f}x "
        "those of length grouping, on the same rows. Padding share: of the tokens the model "
        "computes, those that are padding (the tail of each padded row, or of each packed "
        "sequence). Computed tokens/s shows what a computed token costs in each layout: packed "
        "sequences are longer (attention grows with the square of their length) and carry an "
        "explicit 4D mask, so packing gains less than the padding it saves.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
