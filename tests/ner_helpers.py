"""A tiny named-entity world for tests: a tokenizer and BERT that know its words, and sentences.

Sentences follow a few templates over small sets of people, organisations and places, so a
tiny model trained for a minute tags them; `MERKEL` is the issue's example sentence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers import save_wordpiece_tokenizer, write_jsonl

PEOPLE = [["Angela", "Merkel"], ["John", "Smith"], ["Maria", "Lopez"], ["Peter", "Blackburn"]]
ORGS = [["Siemens"], ["Apple"], ["European", "Commission"], ["Volkswagen"]]
PLACES = [["Munich"], ["Berlin"], ["Paris"], ["Brussels"]]
DAYS = ["Monday", "Friday", "Sunday"]
TEMPLATES = [
    "PER visited the ORG plant in LOC on DAY .",
    "PER said ORG will open an office in LOC .",
    "ORG hired PER in LOC on DAY .",
    "In LOC , PER met ORG .",
]
MERKEL = "Angela Merkel visited the Siemens plant in Munich on Monday."
VOCAB = sorted(
    {word.lower() for names in (*PEOPLE, *ORGS, *PLACES, DAYS) for word in names}
    | {w.lower() for t in TEMPLATES for w in t.split() if w not in ("PER", "ORG", "LOC", "DAY")}
)


def sentence(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """One sentence of a random template with random names, and its IOB2 tags."""
    words, tags = [], []
    for slot in TEMPLATES[rng.integers(len(TEMPLATES))].split():
        pool = {"PER": PEOPLE, "ORG": ORGS, "LOC": PLACES}.get(slot)
        if pool is not None:
            name = pool[rng.integers(len(pool))]
            words += name
            tags += [f"B-{slot}"] + [f"I-{slot}"] * (len(name) - 1)
        else:
            words.append(DAYS[rng.integers(len(DAYS))] if slot == "DAY" else slot)
            tags.append("O")
    return words, tags


def write_sentences(path: Path, n: int, seed: int = 0) -> str:
    """A JSONL file of `n` rows with `tokens` and `tags`.

    A quarter of the rows run 2 to 4 sentences together, longer than the tests' max_length,
    so the model learns to tag them in windows too.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        parts = [sentence(rng) for _ in range(rng.integers(2, 5) if rng.random() < 0.25 else 1)]
        rows.append(([w for p in parts for w in p[0]], [t for p in parts for t in p[1]]))
    return str(write_jsonl(path, [{"tokens": w, "tags": t} for w, t in rows]))


def ner_model_dir(directory: Path) -> Path:
    """A random-init 2-layer BERT for token classification, with a tokenizer of `VOCAB`."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = save_wordpiece_tokenizer(directory, [*specials, *VOCAB, ".", ","])
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2,
    )  # fmt: skip
    BertForTokenClassification(config).save_pretrained(directory, safe_serialization=True)
    return directory
