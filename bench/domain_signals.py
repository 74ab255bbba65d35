"""The recommender's domain signals on the data at hand: the evidence for its thresholds.

For each sample of text, the packaged all-MiniLM-L6-v2 measures what `ftpipe recommend` does
(ftpipe.strategies.domain): the cosine distance between the sample's mean row embedding and
that of the shipped reference prose, a row being the mean of its word pieces' input
embeddings, and the tokenizer's pieces per word and unknown-token rate. Beside it, the same
distance on the last layer's mean-pooled output, which the recommender does not use.
Samples: the demo's support tickets, SST-2 train and dev, CoNLL-2003's sentences, and
synthetic out-of-domain text made from SST-2 (letters replaced at random, words shuffled,
strings of random SST-2 words). The reference's two halves against each other give the noise floor.

Usage: .venv/bin/python bench/domain_signals.py [--rows 2000]
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

import numpy as np
import torch
from report import hardware_summary, write_section
from words import noised

from ftpipe.config.load import validate_config
from ftpipe.data.features import extract_features
from ftpipe.data.prepared import Split
from ftpipe.hub import resolve_model
from ftpipe.strategies.domain import (
    embedding_distance,
    mean_piece_embeddings,
    reference_sentences,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def tsv_column(path: Path, column: str) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [row[column] for row in csv.DictReader(handle, delimiter="\t", quoting=3)]


def conll_sentences(path: Path) -> list[str]:
    sentences, words = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append(" ".join(words))
            words = []
        else:
            words.append(line.split()[0])
    return sentences + ([" ".join(words)] if words else [])


def shuffled(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def samples(rows: int) -> dict[str, list[str]]:
    """Named text samples of at most `rows` rows each (seeded)."""
    rng = random.Random(0)

    def pick(texts: list[str]) -> list[str]:
        return rng.sample(texts, min(rows, len(texts)))

    tickets = REPO / "examples/support_tickets/tickets.csv"
    with tickets.open(newline="", encoding="utf-8") as handle:
        demo = [row["text"] for row in csv.DictReader(handle)]
    sst2 = pick(tsv_column(DATA / "sst2/train.tsv", "sentence"))
    vocabulary = sorted({w for text in sst2 for w in text.split()})
    reference = reference_sentences()
    return {
        "reference, first half vs second half": reference[: len(reference) // 2],
        "demo: support tickets": pick(demo),
        "SST-2 train": sst2,
        "SST-2 dev": pick(tsv_column(DATA / "sst2/dev.tsv", "sentence")),
        "CoNLL-2003 train sentences": pick(conll_sentences(DATA / "conll2003/train.txt")),
        "synthetic: SST-2, 30% of letters replaced": [noised(t, rng) for t in sst2],
        "synthetic: SST-2, words shuffled": [shuffled(t, rng) for t in sst2],
        "synthetic: random SST-2 words": [
            " ".join(rng.choices(vocabulary, k=len(t.split()))) for t in sst2
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    config = validate_config({"data": {"train": "unused.csv"}})
    location = resolve_model(config.model.name)
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
    backbone = AutoModel.from_pretrained(location, trust_remote_code=False, use_safetensors=True)
    reference = reference_sentences()

    special = set(tokenizer.all_special_ids)

    def embeddings(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean piece input embeddings (what recommend uses) and last-layer mean pooling."""
        ids = tokenizer(texts, truncation=True, max_length=config.data.max_length)["input_ids"]
        split = Split(ids, None, np.zeros(len(ids), np.int64))
        pooled = extract_features(backbone, split, "mean", 32, tokenizer.pad_token_id, "pooled")
        return mean_piece_embeddings(backbone, ids, special), pooled

    second_half = embeddings(reference[len(reference) // 2 :])
    whole = embeddings(reference)
    lines = [
        "| sample | rows | embedding distance (used) | last-layer distance (not used) | "
        "pieces per word | unknown tokens |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, texts in samples(args.rows).items():
        against = second_half if name.startswith("reference") else whole
        pieces_mean, pooled = embeddings(texts)
        distance = embedding_distance(pieces_mean, against[0])
        last_layer = embedding_distance(pooled, against[1])
        words = sum(len(t.split()) for t in texts)
        pieces = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        unknown = sum(p.count(tokenizer.unk_token_id) for p in pieces)
        total = sum(map(len, pieces))
        lines.append(
            f"| {name} | {len(texts):,} | {distance:.3f} | {last_layer:.3f} | "
            f"{total / words:.2f} | {unknown / total:.2%} |"
        )
        print(lines[-1], flush=True)
    body = "\n".join(
        [
            f"all-MiniLM-L6-v2, mean pooling, max_length {config.data.max_length}; at most "
            f"{args.rows:,} rows per sample (seeded); the reference is "
            f"src/ftpipe/strategies/reference_english.txt ({len(reference)} sentences). "
            "Embedding distance is 1 - cosine between the mean unit-length row embeddings of "
            "the sample and of the reference; `ftpipe recommend` calls data dissimilar above "
            "recommend.max_embedding_distance (0.25), or above 1.5 pieces per word or 1% "
            "unknown tokens. The packaged checkpoint ships no masked-LM head, so "
            "pseudo-perplexity is not measured on it, and nothing here sees word order: "
            "shuffled words pass as familiar text.",
            "",
            *lines,
        ]
    )
    write_section(
        "domain-signals", "Recommender domain signals", "bench/domain_signals.py",
        hardware_summary(), body,
    )  # fmt: skip


if __name__ == "__main__":
    main()
