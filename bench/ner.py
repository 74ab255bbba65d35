"""CoNLL-2003 named entities through the CLI on CPU: full fine-tuning, LoRA and a cached head.

Runs `ftpipe prep`, `ftpipe train` and `ftpipe evaluate` exactly as a user would, with
configs/conll2003.yaml: the model selects its checkpoint on valid and is scored on test,
which training never reads. Entity F1 is strict IOB2 (seqeval's strict mode), micro over the
four types.

1. **Full fine-tuning** of the packaged all-MiniLM-L6-v2 on every training sentence for
   `--epochs` (2), length-grouped steps (`train.group_by_length`), batch 32, 2 Ray Train workers
   with DeepSpeed.
2. **LoRA** (r 8 on the attention projections, the token head trained in full) at
   `--lora-lr` for `--lora-epochs` (1).
3. **Cached feature extraction**: every token's frozen last hidden state computed once, then
   the token head fit to convergence on them (full-batch L-BFGS), once per L2 strength in
   `--head-c` (scikit-learn's C = 1 / (n * train.weight_decay) over the n tagged training
   words). Valid picks the strength, as a sweep would; only the pick is scored on test. The
   first fit's time includes computing the features; the later ones read the cache.

It writes the results beside the published anchors into docs/benchmarks.md, with the cached
head's speed-up over full fine-tuning (training wall time, features included). It takes about
50 minutes on two CPU cores and is never part of `make test`.

Usage: .venv/bin/python bench/ner.py [--epochs 2] [--lora-epochs 1] [--head-c 0.1 1 10]
       [--train-rows N] [--workdir DIR]  (continue a kept run: steps with outputs are not
       run again)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from report import hardware_summary, write_section
from runs import Bench, minutes

ANCHORS = (
    ("BERT-base, fine-tuned (Devlin et al. 2019)", "92.4", "96.4"),
    ("DistilBERT, fine-tuned", "about 92", "about 93–95"),
)
TARGET = 85.0
"""Test entity F1 the issue asks of full fine-tuning on this CPU."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lora-epochs", type=int, default=1)
    parser.add_argument("--lora-lr", type=float, default=1e-3)
    parser.add_argument(
        "--head-c", type=float, nargs="+", default=[0.1, 1.0, 10.0],
        help="inverse L2 strengths of the cached head, picked on valid",
    )  # fmt: skip
    parser.add_argument("--train-rows", type=int, default=None, help="subsample (smoke runs)")
    parser.add_argument("--workdir", type=Path, help="continue a run kept in this dir")
    args = parser.parse_args()
    bench = Bench.prepped("configs/conll2003.yaml", "conll2003/train.txt", args.workdir,
                          args.train_rows, "bench-ner-")  # fmt: skip
    runs = {
        "full": bench.train("full", "strategy.name=full", f"train.epochs={args.epochs}"),
        "lora": bench.train(
            "lora",
            "strategy.name=lora",
            f"train.lr={args.lora_lr}",
            f"train.head_lr={args.lora_lr}",
            f"train.epochs={args.lora_epochs}",
        ),
    }
    words = tagged_words(bench.workdir)
    heads = {
        f"feature-extraction C={c:g}": bench.train(
            f"head-c{c:g}",
            "strategy.name=feature-extraction",
            f"train.weight_decay={1 / (words * c):.3g}",
        )
        for c in args.head_c
    }
    picked = max(heads, key=lambda name: heads[name]["metrics"]["entity_f1"])
    runs |= heads
    tests = {name: bench.score_on_test(runs[name]["name"]) for name in ("full", "lora", picked)}
    body = report(args, bench, runs, tests, words)
    write_section(
        "conll2003", "CoNLL-2003 named entities (CPU)", "bench/ner.py", hardware_summary(), body
    )
    print(body)


def tagged_words(workdir: Path) -> int:
    """Training words with a tag (what the cached head is fit on), from prep's stats."""
    import json

    stats = json.loads((workdir / "prep" / "stats.json").read_text())
    return sum(stats["splits"]["train"]["words_per_tag"].values())


def report(args, bench: Bench, runs: dict, tests: dict, words: int) -> str:
    """The docs/benchmarks.md section: the runs, their F1 on valid and test, the anchors."""
    import json

    stats = json.loads((bench.workdir / "prep" / "stats.json").read_text())["splits"]
    rows = {name: f"{split['rows']:,}" for name, split in stats.items()}
    lines = [
        f"Data: CoNLL-2003 English, {rows['train']} training, {rows['eval']} valid and "
        f"{rows['test']} test sentences after prep (configs/conll2003.yaml: duplicates kept, "
        "the sentences that repeat with other tags dropped). Model: the packaged "
        "all-MiniLM-L6-v2; batch 32, length-grouped steps, max_length 128, 2 Ray Train "
        f"workers with DeepSpeed on CPU. LoRA: r 8 on the attention projections, lr "
        f"{args.lora_lr:g}. Feature extraction: the frozen model's last hidden state of every "
        f"token computed once and cached, then the token head fit to convergence on the "
        f"{words:,} tagged training words (full-batch L-BFGS) at each L2 strength C; valid "
        "picks C, and only the pick is scored on test.",
        "",
        "| run | epochs | valid entity F1 | test entity F1 | test precision / recall | train |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in runs.items():
        test = tests.get(name)
        scores = (
            f"{100 * test['entity_f1']:.1f} | {100 * test['entity_precision']:.1f} / "
            f"{100 * test['entity_recall']:.1f}"
            if test
            else "not scored | –"
        )
        epochs = (
            "fit" if name.startswith("feature-extraction") else f"{result['metrics']['epoch']:g}"
        )
        lines.append(
            f"| {name} | {epochs} | {100 * result['metrics']['entity_f1']:.1f} | {scores} | "
            f"{minutes(result['seconds'])} |"
        )
    lines += ["", "Per type on test (full fine-tuning):", ""]
    lines += ["| type | precision | recall | F1 |", "| --- | ---: | ---: | ---: |"]
    for kind in ("PER", "ORG", "LOC", "MISC"):
        full = tests["full"]
        lines.append(
            f"| {kind} | {100 * full[f'precision/{kind}']:.1f} | {100 * full[f'recall/{kind}']:.1f}"
            f" | {100 * full[f'f1/{kind}']:.1f} |"
        )
    lines += ["", "Published anchors (seqeval, test set):", ""]
    lines += ["| model | test F1 | dev F1 |", "| --- | ---: | ---: |"]
    lines += [f"| {model} | {test} | {dev} |" for model, test, dev in ANCHORS]
    verdict = "met" if 100 * tests["full"]["entity_f1"] >= TARGET else "missed"
    lines += [
        "",
        f"Target: test F1 at least {TARGET:.0f} with full fine-tuning on the whole train split: "
        f"{verdict} ({100 * tests['full']['entity_f1']:.1f}).",
        speed_up(runs),
    ]
    return "\n".join(lines)


def speed_up(runs: dict) -> str:
    """The cached head's training speed-up over full fine-tuning, features included."""
    first = next(
        result for name, result in runs.items() if name.startswith("feature-extraction C=")
    )
    full, head = runs["full"]["seconds"], first["seconds"]
    if full is None or head is None:
        return "Speed-up of the cached head: not measured (a step was reused, untimed)."
    return (
        f"Cached feature extraction trains {full / head:.0f}x faster than full fine-tuning "
        f"({minutes(head)} for its first fit, the features computed included, against "
        f"{minutes(full)}); each further fit on the cache is a run of its own "
        "(Ray and the model started again), timed in the table."
    )


if __name__ == "__main__":
    main()
