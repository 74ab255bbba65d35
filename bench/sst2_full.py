"""SST-2 at full size through the CLI: full fine-tuning and a converged cached head, on CPU.

Runs `ftpipe prep`, `ftpipe train` and `ftpipe evaluate` exactly as a user would, with
configs/sst2.yaml: the model selects on eval (a stratified 2% of train) and is scored on the
872 dev rows, which neither the lr sweep nor training reads.

1. **lr sweep**: full fine-tuning for `--sweep-steps` optimizer steps at each of `--lrs`
   (each a complete short run: warmup and decay span those steps); the best eval accuracy wins.
2. **Full fine-tuning** at that lr on every training row for `--epochs`, length-grouped steps
   (`train.group_by_length`), max_length 64, batch 32 on 2 Ray Train workers with DeepSpeed.
3. **Cached feature extraction**: the frozen backbone's pooled features are computed once; the
   head is fit to convergence (L-BFGS) at each L2 strength of `--weight-decays`, the best on
   eval is scored on dev.

It writes the results beside the published anchors into docs/benchmarks.md. It takes hours
on two CPU cores and is never part of `make test`.

Usage: .venv/bin/python bench/sst2_full.py [--epochs 2] [--train-rows N] [--lrs 5e-5 1e-4 2e-4]
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
ANCHORS = (
    ("MiniLM-L6-H384, full fine-tuning (Wang et al. 2020)", "91.5%"),
    ("DistilBERT, full fine-tuning (Sanh et al. 2019)", "91.3%"),
    ("SBERT-base NLI mean tokens + logistic regression (SentEval)", "88.96%"),
    ("frozen BERT-base + logistic regression (SentEval)", "84%"),
)


class Bench:
    """Runs ftpipe commands on one config, with everything written under a scratch dir."""

    def __init__(self, workdir: Path, train_rows: int | None) -> None:
        self.workdir = workdir
        self.base = [
            f"data.output_dir={workdir / 'prep'}",
            f"recommend.output_dir={workdir / 'recommend'}",
            f"train.cache_dir={workdir / 'cache'}",
            f"registry.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
            *([f"data.max_train_rows={train_rows}"] if train_rows else []),
        ]

    def ftpipe(self, command: str, *overrides: str) -> float:
        """Run one command; return its wall seconds."""
        started = time.perf_counter()
        subprocess.run(
            [FTPIPE, command, "-c", "configs/sst2.yaml", *self.base, *overrides],
            cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True,
        )  # fmt: skip
        return time.perf_counter() - started

    def train(self, name: str, *overrides: str) -> dict:
        """Train into workdir/name; return result.json with `seconds` added."""
        seconds = self.ftpipe("train", f"train.output_dir={self.workdir / name}", *overrides)
        return json.loads((self.workdir / name / "result.json").read_text()) | {"seconds": seconds}

    def score_on_dev(self, name: str) -> dict:
        """`ftpipe evaluate` on the test split (the 872 dev rows); return metrics.json."""
        out = self.workdir / name / "evaluate"
        self.ftpipe(
            "evaluate", f"train.output_dir={self.workdir / name}", f"evaluate.output_dir={out}"
        )
        return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-rows", type=int, default=None, help="subsample (smoke runs)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 1e-4, 2e-4])
    parser.add_argument("--sweep-steps", type=int, default=150)
    parser.add_argument("--weight-decays", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3])
    args = parser.parse_args()
    if not (REPO.parent / "shared/data/sst2/train.tsv").exists():
        sys.exit("SST-2 not found at ../shared/data/sst2; this benchmark needs it.")
    bench = Bench(Path(tempfile.mkdtemp(prefix="bench-sst2-full-")), args.train_rows)
    prep_seconds = bench.ftpipe("prep")
    full = ("strategy.name=full", "train.group_by_length=true")

    sweep = {
        lr: bench.train(
            f"sweep-{lr:g}", *full, f"train.lr={lr}", f"train.max_steps={args.sweep_steps}"
        )
        for lr in args.lrs
    }
    best_lr = max(sweep, key=lambda lr: sweep[lr]["metrics"]["accuracy"])
    tuned = bench.train("full", *full, f"train.lr={best_lr}", f"train.epochs={args.epochs}")
    tuned_dev = bench.score_on_dev("full")

    heads = {
        decay: bench.train(
            f"head-{decay:g}", "strategy.name=feature-extraction", f"train.weight_decay={decay}"
        )
        for decay in args.weight_decays
    }
    best_decay = max(heads, key=lambda decay: heads[decay]["metrics"]["accuracy"])
    head_dev = bench.score_on_dev(f"head-{best_decay:g}")

    stats = json.loads((bench.workdir / "prep" / "stats.json").read_text())
    body = report(args, stats, prep_seconds, sweep, best_lr, tuned, tuned_dev, heads,
                  best_decay, head_dev)  # fmt: skip
    write_section(
        "sst2-full", "SST-2 at full size (CPU)", "bench/sst2_full.py", hardware_summary(), body
    )
    print(body)


def report(args, stats, prep_seconds, sweep, best_lr, tuned, tuned_dev, heads, best_decay,
           head_dev) -> str:  # fmt: skip
    """The docs/benchmarks.md section."""
    rows = stats["splits"]["train"]["rows"]
    hours = prep_seconds + sum(r["seconds"] for r in [*sweep.values(), tuned, *heads.values()])
    sweep_cells = ", ".join(f"{lr:g}: {r['metrics']['accuracy']:.1%}" for lr, r in sweep.items())
    head_cells = ", ".join(f"{d:g}: {r['metrics']['accuracy']:.1%}" for d, r in heads.items())
    lines = [
        f"configs/sst2.yaml on all {rows:,} training rows left after prep (SST-2's 67,349 less "
        "exact duplicates, conflicting phrases and the 2% eval split); the model is selected "
        "on eval and scored once on the 872 dev rows (the config's test split), which the "
        "sweep and training never read. max_length 64, batch 32, 2 Ray Train workers with "
        f"DeepSpeed ZeRO-0, fp32. Prep took {prep_seconds:.0f} s; everything took "
        f"{hours / 3600:.1f} h.",
        "",
        f"- lr sweep ({args.sweep_steps} steps each, eval accuracy): {sweep_cells}; "
        f"best {best_lr:g}.",
        f"- Cached head L2 (`train.weight_decay`, eval accuracy): {head_cells}; best "
        f"{best_decay:g}.",
        "",
        "| run | epochs | dev accuracy | dev macro-F1 | dev ECE | `ftpipe train` wall time | "
        "train samples/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| full fine-tuning, lr {best_lr:g}, length-grouped steps | {args.epochs} | "
        f"{tuned_dev['accuracy']:.1%} | {tuned_dev['macro_f1']:.3f} | {tuned_dev['ece']:.3f} | "
        f"{tuned['seconds'] / 60:.0f} min | "
        f"{tuned['final_metrics']['train_samples_per_second']:.1f} |",
        f"| cached features + converged head (L-BFGS), L2 {best_decay:g} | - | "
        f"{head_dev['accuracy']:.1%} | {head_dev['macro_f1']:.3f} | {head_dev['ece']:.3f} | "
        f"{heads[best_decay]['seconds'] / 60:.1f} min | - |",
        *[f"| anchor: {name} | - | {accuracy} | - | - | - | - |" for name, accuracy in ANCHORS],
        "",
        "Targets: at least 90.0% for full fine-tuning, at least 84% for the cached head. "
        "all-MiniLM-L6-v2 is a sentence-embedding checkpoint (MiniLM-L6-H384 further trained "
        "contrastively on sentence pairs), not the MLM-distilled MiniLM of the 91.5% anchor, "
        "and its 6 layers at width 384 are a quarter of BERT-base's compute; the anchors are "
        "the published numbers for the models named, not runs of this machine.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
