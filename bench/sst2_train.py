"""SST-2 through `ftpipe train`: full fine-tuning of the packaged MiniLM on CPU, bounded.

Runs the CLI exactly as a user would (prep, then train on 2 Ray Train workers with DeepSpeed)
on a stratified subsample of the training split (`--train-rows`, default 6,000; one epoch,
max_length 64), evaluates on all 872 dev rows, and writes the row beside the full-data anchor
(MiniLM-L6: 91.5) into docs/benchmarks.md.

Usage: .venv/bin/python bench/sst2_train.py [--train-rows 6000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import hardware_summary, write_section

REPO = Path(__file__).resolve().parents[1]
FTPIPE = str(Path(sys.executable).with_name("ftpipe"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    if not (REPO.parent / "shared/data/sst2/train.tsv").exists():
        sys.exit("SST-2 not found at ../shared/data/sst2; this benchmark needs it.")
    workdir = Path(tempfile.mkdtemp(prefix="bench-sst2-"))
    overrides = [
        f"data.max_train_rows={args.train_rows}",
        f"train.epochs={args.epochs}",
        f"data.output_dir={workdir / 'prep'}",
        f"train.output_dir={workdir / 'train'}",
        # Score on the dev set, as the rows below always have (the config keeps it as test).
        "data.eval=../shared/data/sst2/dev.tsv",
        "data.test=null",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for command in ("prep", "train"):
        started = time.perf_counter()
        subprocess.run(
            [FTPIPE, command, "-c", "configs/sst2.yaml", *overrides], cwd=REPO, env=env, check=True
        )
        seconds = time.perf_counter() - started
    result = json.loads((workdir / "train" / "result.json").read_text())
    best, final = result["metrics"], result["final_metrics"]
    stats = json.loads((workdir / "prep" / "stats.json").read_text())
    rows = stats["splits"]["train"]["rows"]
    body = "\n".join(
        [
            "Full fine-tuning of the packaged all-MiniLM-L6-v2 through `ftpipe train` "
            f"(2 Ray Train workers, DeepSpeed ZeRO-0, fp32, batch 32, lr 1e-4, head lr 1e-3, "
            f"linear schedule) on {rows:,} SST-2 training rows (a stratified sample of the "
            f"67,349), {args.epochs} epoch(s), max_length 64; evaluated on all 872 dev rows.",
            "",
            "| run | train rows | epochs | dev accuracy | macro-F1 | `ftpipe train` wall time | "
            "train samples/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| ftpipe, CPU (this run) | {rows:,} | {args.epochs} | {best['accuracy']:.1%} | "
            f"{best['macro_f1']:.3f} | {seconds:.0f} s | "
            f"{final['train_samples_per_second']:.1f} |",
            "| anchor: MiniLM-L6, full data | 67,349 | - | 91.5% | - | - | - |",
            "",
            "The gap to the anchor is the budget: a ninth of the data for one epoch on two CPU "
            "cores. The wall time includes starting Ray and the workers, the evaluation, the "
            "checkpoint and the export.",
        ]
    )
    write_section(
        "sst2-train", "SST-2 through ftpipe train (CPU)", "bench/sst2_train.py",
        hardware_summary(), body,
    )  # fmt: skip
    print(body)


if __name__ == "__main__":
    main()
