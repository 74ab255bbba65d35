"""Benchmark `ftpipe prep`: throughput on GLUE SST-2, and peak memory as the input grows.

Two parts, each side by side with a baseline in the same run:

* Throughput, on the full GLUE SST-2 train split (67,349 rows) and the packaged MiniLM
  tokenizer (max_length 64): ftpipe prep, the whole stage (read the TSV, validate with
  duplicates, conflicts and leakage against dev, tokenize, stats, write Parquet shards,
  fingerprint), against `datasets.Dataset.map(batched=True)` tokenization alone of rows already
  in memory, with one process and with `num_proc=2`. Each runs `--repeats` times in
  alternating rounds (the forking contender last); the table reports median and range.
* Memory, in a fresh subprocess per run: peak RSS (`ru_maxrss`) and rows/s of the streaming
  prep of this tree against the whole-file prep of `--baseline-ref` (a git commit from before
  streaming reads, extracted with `git archive` and put first on PYTHONPATH), on SST-2 and on a
  generated CSV of `--baseline-mb`; the streaming prep alone also on a generated CSV of
  `--size-mb` (the baseline would need about 16x that file in memory). Each subprocess first
  imports ftpipe and loads the tokenizer, and reports that RSS too (the constant part).

Results replace the prep section of docs/benchmarks.md.

Usage: .venv/bin/python bench/prep.py [--repeats 5] [--memory-repeats 3] [--size-mb 1024]
    [--baseline-mb 200]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from report import hardware_summary, write_section
from words import WORDS

from ftpipe.config import load_config
from ftpipe.data import run_prep
from ftpipe.hub import resolve_model

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"
MAX_LENGTH = 64
BASELINE_REF = "d3e7c68"
"""The last commit whose prep reads each input whole (issue 20 made it stream)."""

CHILD = """
import json, os, resource, sys, time
from ftpipe.config.load import validate_config
from ftpipe.data.prep import run_prep
from ftpipe.data.tokenize import load_tokenizer
import ftpipe
config = validate_config(json.loads(sys.argv[1]))
load_tokenizer(config.model)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
stats = run_prep(config).stats
seconds = time.perf_counter() - start
rows = sum(s["rows"] + sum(s["dropped"].values()) for s in stats["splits"].values())
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "base_kib": base, "seconds": seconds, "rows": rows, "code": ftpipe.__file__}))
"""
"""Runs prep on the config given as JSON; prints peak and import RSS (KiB), seconds, rows."""


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


def generate_csv(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write a text,label CSV of about `megabytes` MiB of distinct sentences; return its rows."""
    rng = random.Random(seed)
    written = rows = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("text,label\n")
        while written < megabytes * 2**20:
            lines = []
            for _ in range(10_000):
                text = " ".join(rng.choices(WORDS, k=rng.randint(8, 30)))
                lines.append(f"{text} {rows},{'pos' if rng.random() < 0.5 else 'neg'}\n")
                rows += 1
            chunk = "".join(lines)
            handle.write(chunk)
            written += len(chunk)
    return rows


def measure(code: Path, data: dict, workdir: Path) -> dict:
    """Run prep in a fresh subprocess with `code` first on PYTHONPATH; return its figures."""
    raw = {"data": {**data, "output_dir": str(workdir / "out"), "max_length": MAX_LENGTH}}
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(raw)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    shutil.rmtree(workdir / "out", ignore_errors=True)
    if done.returncode:
        sys.exit(f"prep failed under {code}:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["code"].startswith(str(code)):
        sys.exit(f"the subprocess ran {result['code']}, not the code under {code}")
    return result


def baseline_tree(ref: str, workdir: Path) -> Path:
    """Extract src/ftpipe of a git commit; return the directory to put on PYTHONPATH."""
    tree = workdir / f"baseline-{ref}"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", ref, "src/ftpipe"], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree / "src"


def interleaved_runs(
    codes: dict[str, Path], data: dict, workdir: Path, rounds: int
) -> dict[str, list[dict]]:
    """`measure` each code tree `rounds` times, alternating, so drift hits all alike."""
    runs: dict[str, list[dict]] = {label: [] for label in codes}
    for _ in range(rounds):
        for label, code in codes.items():
            runs[label].append(measure(code, data, workdir))
    return runs


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per contender: the highest peaks, and the median rows/s with its range."""
    summary = {}
    for label, measured in runs.items():
        rates = [run["rows"] / run["seconds"] for run in measured]
        summary[label] = {
            "peak_kib": max(run["peak_kib"] for run in measured),
            "base_kib": max(run["base_kib"] for run in measured),
            "rate": statistics.median(rates),
            "range": f"{min(rates):,.0f}-{max(rates):,.0f}",
        }
    return summary


def memory_lines(args: argparse.Namespace, workdir: Path) -> list[str]:
    """Peak RSS and rows/s of streaming prep against the whole-file baseline, as table lines."""
    current, baseline = REPO / "src", baseline_tree(args.baseline_ref, workdir)
    small, large = workdir / "small.csv", workdir / "large.csv"
    inputs = {
        "SST-2 train.tsv (+ dev.tsv)": (
            {"train": str(SST2 / "train.tsv"), "eval": str(SST2 / "dev.tsv"),
             "text_column": "sentence", "on_error": "drop"},
            SST2 / "train.tsv",
        ),
        f"generated CSV, {args.baseline_mb} MiB": ({"train": str(small)}, small),
        f"generated CSV, {args.size_mb} MiB": ({"train": str(large)}, large),
    }  # fmt: skip
    generate_csv(small, args.baseline_mb, seed=1)
    lines = [
        "| input | file MiB | prep | peak RSS MiB | peak - import MiB | (peak - import) / file "
        "| rows/s, median (range) | vs baseline: peak, rows/s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, (data, path) in inputs.items():
        if path == large:
            generate_csv(large, args.size_mb, seed=2)
        size = path.stat().st_size / 2**20
        codes = {"streaming (this tree)": current}
        if path != large:  # the baseline would need about 16x the large file in memory
            codes[f"whole-file ({args.baseline_ref})"] = baseline
        rounds = args.memory_repeats if len(codes) > 1 else 1
        runs = summarize(interleaved_runs(codes, data, workdir, rounds))
        ours, other = runs["streaming (this tree)"], runs.get(f"whole-file ({args.baseline_ref})")
        for label, run in runs.items():
            peak, base = run["peak_kib"] / 1024, run["base_kib"] / 1024
            versus = "baseline" if run is other else "-"
            if run is ours and other is not None:
                peak_ratio, rate_ratio = (
                    ours["peak_kib"] / other["peak_kib"],
                    ours["rate"] / other["rate"],
                )
                versus = f"{peak_ratio:.2f}x, {rate_ratio:.2f}x"
            lines.append(
                f"| {name} | {size:,.0f} | {label} | {peak:,.0f} | {peak - base:,.0f} | "
                f"{(peak - base) / size:.2f} | {run['rate']:,.0f} ({run['range']}) | {versus} |"
            )
        if path != SST2 / "train.tsv":
            path.unlink(missing_ok=True)
    return lines


def throughput_lines(repeats: int, workdir: Path) -> list[str]:
    """The SST-2 throughput table against datasets.map, with its closing sentence."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
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
        repeats,
    )
    # Runs last: once a process forks, the Rust tokenizer turns its thread pool off in this
    # process too, which would slow every in-process contender after it.
    times |= interleaved_times(
        {
            "datasets.map(batched=True, num_proc=2), tokenize only": lambda: raw.map(
                tokenize, batched=True, num_proc=2
            )
        },
        repeats,
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = medians["datasets.map(batched=True), tokenize only"]
    prep_seconds = medians["ftpipe prep (read + validate + tokenize + stats + write)"]
    lines = [
        f"Full GLUE SST-2 train split: {n_rows:,} rows (plus the 872-row dev set that prep also "
        f"validates for leakage), packaged all-MiniLM-L6-v2 tokenizer, max_length {MAX_LENGTH}, "
        f"median of {repeats} runs.",
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
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="Runs of each contender.")
    parser.add_argument("--size-mb", type=float, default=1024, help="Large generated CSV, MiB.")
    parser.add_argument(
        "--baseline-mb", type=float, default=200, help="Generated CSV both preps run on, MiB."
    )
    parser.add_argument(
        "--memory-repeats",
        type=int,
        default=3,
        help="Alternating runs of each prep on the inputs the baseline also runs on.",
    )
    parser.add_argument(
        "--baseline-ref", default=BASELINE_REF, help="Commit of the whole-file prep baseline."
    )
    args = parser.parse_args()
    if not (SST2 / "train.tsv").exists():
        sys.exit(
            f"SST-2 not found at {SST2}: this benchmark needs GLUE SST-2's train.tsv and dev.tsv "
            "in ../shared/data/sst2 beside the repository. Nothing was measured."
        )
    workdir = Path(tempfile.mkdtemp(prefix="bench-prep-", dir=os.environ.get("TMPDIR", "/tmp")))
    try:
        lines = throughput_lines(args.repeats, workdir)
        lines += [
            "",
            "### Peak memory as the input grows",
            "",
            f"Each run in a fresh subprocess, max_length {MAX_LENGTH}, packaged MiniLM tokenizer; "
            f"on inputs with a baseline, {args.memory_repeats} alternating rounds (highest peak, "
            "median rows/s). "
            '"import" is the high-water RSS after importing ftpipe (torch, transformers) and '
            "loading the tokenizer, before prep; a prep that stays below it shows 0. "
            f"Baseline: the whole-file prep of commit {args.baseline_ref} (git archive, first on "
            f"PYTHONPATH); it runs on SST-2 and the {args.baseline_mb:g} MiB file only, as it "
            "holds about 16x the file in memory. Generated rows: 8-30 random words and a counter, "
            "two labels.",
            "",
            *memory_lines(args, workdir),
            "",
            "Target (issue 20): peak at most 2x the file plus a constant under 1 GiB, and at least "
            "the whole-file prep's rows/s.",
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    body = "\n".join(lines)
    write_section("prep", "Data preparation", "bench/prep.py", hardware_summary(), body)
    print(body)


if __name__ == "__main__":
    main()
