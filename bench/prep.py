"""Benchmark `ftpipe prep` on the full GLUE SST-2 train split against datasets.map.

Side by side in one run, on the same 67,349 rows and the same packaged MiniLM tokenizer
(max_length 64):

* ftpipe prep: the whole stage — read the TSV, validate (duplicates, conflicts, leakage
  against dev), tokenize, compute stats, write Parquet shards, fingerprint.
* baseline: `datasets.Dataset.map(batched=True)` tokenization alone of rows already in memory,
  with one process and with `num_proc=2`.

Each runs `--repeats` times, in alternating rounds (the forking contender last); the table
reports the median and the range. Results
replace the prep section of docs/benchmarks.md.

Usage: .venv/bin/python bench/prep.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from report import hardware_summary, write_section

from ftpipe.config import load_config
from ftpipe.data import run_prep
from ftpipe.hub import resolve_model

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"
MAX_LENGTH = 64


def interleaved_times(
    contenders: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Wall times of each contender; rounds alternate, so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="Runs of each contender.")
    args = parser.parse_args()
    if not (SST2 / "train.tsv").exists():
        sys.exit(f"SST-2 not found at {SST2}; this benchmark needs ../shared/data/sst2.")

    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    workdir = Path(tempfile.mkdtemp(prefix="bench-prep-"))
    config = load_config(
        REPO / "configs/sst2.yaml",
        [f"data.max_length={MAX_LENGTH}", f"data.output_dir={workdir / 'prep'}"],
    )
    with (SST2 / "train.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    n_rows = len(rows)
    raw = datasets.Dataset.from_dict(
        {"sentence": [r[0] for r in rows], "label": [int(r[1]) for r in rows]}
    )
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.model.name))

    def tokenize(batch: dict) -> dict:
        return tokenizer(batch["sentence"], truncation=True, max_length=MAX_LENGTH)

    times = interleaved_times(
        {
            "ftpipe prep (read + validate + tokenize + stats + write)": lambda: run_prep(config),
            "datasets.map(batched=True), tokenize only": lambda: raw.map(tokenize, batched=True),
        },
        args.repeats,
    )
    # Runs last: once a process forks, the Rust tokenizer turns its thread pool off in this
    # process too, which would slow every in-process contender after it.
    times |= interleaved_times(
        {
            "datasets.map(batched=True, num_proc=2), tokenize only": lambda: raw.map(
                tokenize, batched=True, num_proc=2
            )
        },
        args.repeats,
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = medians["datasets.map(batched=True), tokenize only"]
    prep_seconds = medians["ftpipe prep (read + validate + tokenize + stats + write)"]
    lines = [
        f"Full GLUE SST-2 train split: {n_rows:,} rows (plus the 872-row dev set that prep also "
        f"validates for leakage), packaged all-MiniLM-L6-v2 tokenizer, max_length {MAX_LENGTH}, "
        f"median of {args.repeats} runs.",
        "",
        "| contender | median s | range s | rows/s | throughput vs datasets.map |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, seconds in medians.items():
        spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}"
        lines.append(
            f"| {name} | {seconds:.2f} | {spread} | {n_rows / seconds:,.0f} | "
            f"{baseline / seconds:.2f}x |"
        )
    lines += [
        "",
        "Targets (issue: foundation): full-split prep under 15 s on 2 cores, and throughput at "
        f"least that of the datasets.map baseline. Prep: {prep_seconds:.1f} s, "
        f"{baseline / prep_seconds:.2f}x the baseline's throughput. The num_proc=2 variant runs "
        "after the others: forking turns the Rust tokenizer's thread pool off in the parent.",
    ]
    body = "\n".join(lines)
    write_section("prep", "Data preparation", "bench/prep.py", hardware_summary(), body)
    print(body)


if __name__ == "__main__":
    main()
