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

With `--trl`, TRL's SFTTrainer trains the same prepared token ids and labels beside them
(bench/trl_sft.py), unpacked and packed, in the same rounds: the baseline users coming from TRL
know. Install it first with `pip install -e .[bench]`.

Usage: .venv/bin/python bench/sft.py [--rounds 3] [--epochs 3] [--threads 1] [--micro 16] [--trl]
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
from trl_sft import run_trl, trl_available, trl_rows

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
TRL_LAYOUTS = {"TRL SFTTrainer": False, "TRL SFTTrainer, packed": True}
"""TRL's runs beside them (`--trl`): whether each packs."""


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
    parser.add_argument("--trl", action="store_true", help="Also run TRL's SFTTrainer.")
    args = parser.parse_args()
    if not (DEMO / "train.jsonl").exists():
        sys.exit(f"The demo conversations are not at {DEMO}; this benchmark needs them.")
    if args.trl and not trl_available():
        sys.exit("--trl needs TRL: install the bench extra with `pip install -e .[bench]`.")
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
    runs = {layout: lambda c=config: ftpipe_run(c, data) for layout, config in configs.items()}
    if args.trl:
        rows = trl_rows(data.splits["train"], data.task)
        for layout, packed in TRL_LAYOUTS.items():
            runs[layout] = lambda p=packed: trl_run(model_dir, rows, p, configs["unpacked"],
                                                    workdir / "trl")  # fmt: skip
    # A first run in a process pays for one-time set-up inside its first steps: discard one.
    ftpipe_run(configs["unpacked"], data)
    seconds: dict[str, list[float]] = {layout: [] for layout in runs}
    real: dict[str, list[float]] = {layout: [] for layout in runs}
    for round_ in range(args.rounds):
        for layout, run in runs.items():
            run_seconds, real_rate = run()
            seconds[layout].append(run_seconds)
            real[layout].append(real_rate)
            print(f"round {round_ + 1} {layout}: {run_seconds:.2f} s", flush=True)
    body = report(args, configs, data, seconds, real)
    command = " ".join(["bench/sft.py", *sys.argv[1:]])
    title = "Instruction tuning: packing" + (", beside TRL's SFTTrainer" if args.trl else "")
    device = "GPU" if torch.cuda.is_available() else "CPU"
    write_section("sft-packing", f"{title} ({device})", command, hardware_summary(), body)
    print(body)


def ftpipe_run(config, data) -> tuple[float, float]:
    """Train with ftpipe's core: (training seconds, real tokens/s)."""
    result = train(config, data, RankContext(), lambda metrics, staging: None)
    return result.train_seconds, result.tokens_per_second


def trl_run(model_dir: Path, rows, packed: bool, config, output_dir: Path) -> tuple[float, float]:
    """Train with TRL's SFTTrainer: (training seconds, real tokens/s)."""
    result = run_trl(model_dir, rows, packed=packed, config=config, output_dir=output_dir)
    return result.seconds, result.real_tokens / result.seconds


def report(args, configs, data, seconds, real) -> str:
    """The docs/benchmarks.md section: every layout's rates, and packing's speed-up."""
    config = configs["unpacked"]
    split = data.splits["train"]
    lengths = split.lengths
    targets = target_tokens(config, data)
    precision = "bf16" if torch.cuda.is_available() else "fp32"  # train.precision: auto
    lines = [
        f"Data: the {len(split)} training conversations of examples/sft_demo (10% held out; "
        f"{lengths.min()} to {lengths.max()} tokens, median {np.median(lengths):.0f}), the "
        f"assistant turns the targets: {targets:,} target tokens in {args.epochs} epochs. "
        "Model: the demo's tiny Llama built from a config (examples/sft_demo/build_model.py), "
        f"full fine-tuning, {precision}, batch {config.train.batch_size} in micro-batches of "
        f"{args.micro}, data.max_length {config.data.max_length}, {args.epochs} epochs per run, "
        f"torch threads {args.threads}; median of {args.rounds} runs per layout, alternating, "
        "after a discarded warm-up run.",
        "",
        "| layout | padding share (epoch 1) | train s | target tokens/s | real tokens/s | "
        "computed tokens/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    median = {layout: statistics.median(times) for layout, times in seconds.items()}
    rate = {layout: statistics.median(rates) for layout, rates in real.items()}
    for layout, layout_config in configs.items():
        share = padding(layout_config, data, layout)
        lines.append(
            f"| {layout} | {share:.1%} | {median[layout]:.1f} | {targets / median[layout]:,.0f} "
            f"| {rate[layout]:,.0f} | {rate[layout] / (1 - share):,.0f} |"
        )
    # TRL's collators don't say how much they pad, and it trains every row each epoch (no
    # partial step dropped): real tokens/s, counted by its trainer, is the rate to compare.
    lines += [f"| {layout} | | {median[layout]:.1f} | | {rate[layout]:,.0f} | |"
              for layout in TRL_LAYOUTS if layout in median]  # fmt: skip
    lines += [
        "",
        f"Packing trains {median['unpacked'] / median['packed']:.2f}x the target tokens/s "
        f"of the unpacked run and {median['unpacked, length-grouped'] / median['packed']:.2f}x "
        "those of length grouping, on the same rows. Padding share: of the tokens the model "
        "computes, those that are padding (the tail of each padded row, or of each packed "
        "sequence). Computed tokens/s shows what a computed token costs in each layout: packed "
        "sequences are longer (attention grows with the square of their length) and carry an "
        "explicit 4D mask, so packing gains less than the padding it saves.",
    ]
    if "TRL SFTTrainer" in median:
        lines += [
            "",
            "TRL's SFTTrainer trained the same prepared token ids and labels in the same rounds "
            "(bench/trl_sft.py; its packing is best-fit decreasing into padding-free sequences "
            f"whose position ids restart at each row). In real tokens/s, ftpipe unpacked runs at "
            f"{rate['unpacked'] / rate['TRL SFTTrainer']:.2f}x TRL unpacked, and ftpipe packed "
            f"at {rate['packed'] / rate['TRL SFTTrainer, packed']:.2f}x TRL packed. TRL packs "
            "conversations into each of a step's rows, so it takes fewer, fuller steps than "
            "ftpipe, which packs each micro-batch's rows; and a model this small makes each "
            "trainer's fixed cost per step (TRL's includes token accuracy and entropy metrics) "
            "weigh far more than on a real model on a GPU.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
