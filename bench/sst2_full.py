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
       [--workdir DIR]  (continue a kept run: steps with outputs are not run again)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from report import hardware_summary, write_section
from runs import REPO, Bench, minutes

ANCHORS = (
    ("MiniLM-L6-H384, full fine-tuning (Wang et al. 2020)", "91.5%"),
    ("DistilBERT, full fine-tuning (Sanh et al. 2019)", "91.3%"),
    ("SBERT-base NLI mean tokens + logistic regression (SentEval)", "88.96%"),
    ("frozen BERT-base + logistic regression (SentEval)", "84%"),
)


def padding_shares(prep: Path, batch: int, workers: int, seed: int) -> tuple[float, float]:
    """Share of computed tokens that are padding in one epoch: plain and length-grouped steps."""
    from ftpipe.data.prepared import load_prepared
    from ftpipe.train.batching import rank_order

    lengths = load_prepared(prep).splits["train"].lengths
    shares = []
    for grouped in (False, True):
        computed = real = 0
        for rank in range(workers):
            rows = rank_order(lengths, seed, 0, rank, workers, batch // workers, grouped)
            micro = lengths[rows.reshape(-1, batch // workers)]
            computed += int(micro.max(axis=1).sum()) * micro.shape[1]
            real += int(micro.sum())
        shares.append(1 - real / computed)
    return shares[0], shares[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-rows", type=int, default=None, help="subsample (smoke runs)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 1e-4, 2e-4])
    parser.add_argument("--sweep-steps", type=int, default=150)
    parser.add_argument("--weight-decays", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3])
    parser.add_argument("--workdir", type=Path, help="continue a run kept in this dir")
    args = parser.parse_args()
    bench = Bench.prepped("configs/sst2.yaml", "sst2/train.tsv", args.workdir, args.train_rows,
                          "bench-sst2-full-")  # fmt: skip
    full = ("strategy.name=full", "train.group_by_length=true")

    sweep = {
        lr: bench.train(
            f"sweep-{lr:g}", *full, f"train.lr={lr}", f"train.max_steps={args.sweep_steps}"
        )
        for lr in args.lrs
    }
    best_lr = max(sweep, key=lambda lr: sweep[lr]["metrics"]["accuracy"])
    tuned = bench.train("full", *full, f"train.lr={best_lr}", f"train.epochs={args.epochs}")
    tuned_dev = bench.score_on_test("full")

    # The first head run fills the feature cache; the later ones only fit on it.
    heads = {
        decay: bench.train(
            f"head-{decay:g}", "strategy.name=feature-extraction", f"train.weight_decay={decay}"
        )
        for decay in args.weight_decays
    }
    best_decay = max(heads, key=lambda decay: heads[decay]["metrics"]["accuracy"])
    head_dev = bench.score_on_test(f"head-{best_decay:g}")

    body = report(args, bench, sweep, best_lr, tuned, tuned_dev, heads, best_decay, head_dev)
    write_section(
        "sst2-full", "SST-2 at full size (CPU)", "bench/sst2_full.py", hardware_summary(), body
    )
    print(body)


def report(args, bench, sweep, best_lr, tuned, tuned_dev, heads, best_decay, head_dev) -> str:
    """The docs/benchmarks.md section."""
    from ftpipe.config import load_config

    config = load_config(REPO / "configs/sst2.yaml").train
    splits = json.loads((bench.workdir / "prep" / "stats.json").read_text())["splits"]
    rows, eval_rows = splits["train"], splits["eval"]["rows"]
    best = sweep[best_lr]["metrics"]["accuracy"]
    sweep_error = (best * (1 - best) / eval_rows) ** 0.5
    plain, grouped = padding_shares(
        bench.workdir / "prep", config.batch_size, config.num_workers, 42
    )
    first_head = heads[args.weight_decays[0]]
    later = [heads[d]["seconds"] for d in args.weight_decays[1:] if heads[d]["seconds"]]
    sample = (
        f"a stratified sample of {args.train_rows:,} SST-2 training rows"
        if args.train_rows
        else f"all {rows['rows']:,} SST-2 training rows that prep keeps (the 67,349 less exact "
        "duplicates, conflicting phrases and the 2% eval split)"
    )
    lines = [
        f"configs/sst2.yaml on {sample}; the model is selected on eval and scored once on the "
        "872 dev rows (the config's test split), which the sweep and training never read. "
        f"max_length {load_config(REPO / 'configs/sst2.yaml').data.max_length}, batch "
        f"{config.batch_size} on {config.num_workers} Ray Train workers, DeepSpeed ZeRO-"
        f"{config.zero_stage}, fp32 on CPU. Length-grouped steps (`train.group_by_length`): "
        f"padding is {grouped:.0%} of the tokens computed, against {plain:.0%} with plain "
        "shuffled steps.",
        "",
        f"- lr sweep ({args.sweep_steps} steps each, eval accuracy): "
        + ", ".join(f"{lr:g}: {r['metrics']['accuracy']:.1%}" for lr, r in sweep.items())
        + f"; best {best_lr:g}.",
        "- Cached head L2 (`train.weight_decay`, eval accuracy): "
        + ", ".join(f"{d:g}: {r['metrics']['accuracy']:.1%}" for d, r in heads.items())
        + f"; best {best_decay:g}. The first head run, which fills the feature cache (a forward "
        f"pass over every row), took {minutes(first_head['seconds'])}; each later fit on the "
        f"cache {minutes(sum(later) / len(later) if later else None)}, start-up included.",
        "",
        "| run | epochs | dev accuracy | dev macro-F1 | dev ECE | `ftpipe train` wall time | "
        "train samples/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| full fine-tuning, lr {best_lr:g} | {args.epochs} | {tuned_dev['accuracy']:.1%} | "
        f"{tuned_dev['macro_f1']:.3f} | {tuned_dev['ece']:.3f} | {minutes(tuned['seconds'])} | "
        f"{tuned['final_metrics']['train_samples_per_second']:.1f} |",
        f"| cached features + converged head (L-BFGS), L2 {best_decay:g} | - | "
        f"{head_dev['accuracy']:.1%} | {head_dev['macro_f1']:.3f} | {head_dev['ece']:.3f} | "
        f"{minutes(heads[best_decay]['seconds'])} | - |",
        *[f"| anchor: {name} | - | {accuracy} | - | - | - | - |" for name, accuracy in ANCHORS],
        "",
        "Targets: at least 90.0% for full fine-tuning, at least 84% for the cached head. "
        "all-MiniLM-L6-v2 is a sentence-embedding checkpoint (MiniLM-L6-H384 further trained "
        "contrastively on sentence pairs), not the MLM-distilled MiniLM of the 91.5% anchor, "
        "and its 6 layers at width 384 take about an eighth of BERT-base's compute per token; "
        "the anchors are the published numbers for the models named, not runs of this machine. "
        f"The sweep's eval accuracies have a standard error of about {sweep_error:.1%} "
        f"({eval_rows:,} eval rows).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
