"""Helpers for writing test inputs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ftpipe.config import Config

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"
needs_sst2 = pytest.mark.skipif(
    not (SST2 / "train.tsv").exists(),
    reason=f"GLUE SST-2 not found at {SST2}: these tests need ../shared/data/sst2 beside the repo",
)


def write_csv(
    path: Path,
    rows: list[list[Any]],
    header: list[str] | None = ("text", "label"),
    delimiter: str = ",",
) -> Path:
    """Write rows with an optional header: CSV with RFC 4180 quoting, TSV literally (as GLUE)."""
    lines = ([list(header)] if header is not None else []) + [list(r) for r in rows]
    with path.open("w", newline="", encoding="utf-8") as handle:
        if delimiter == "\t":
            handle.writelines("\t".join(map(str, line)) + "\n" for line in lines)
        else:
            csv.writer(handle, delimiter=delimiter, lineterminator="\n").writerows(lines)
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write one JSON object per line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def balanced_rows(
    n_per_class: int = 10, labels: tuple[str, ...] = ("good", "bad")
) -> list[list[str]]:
    """Distinct texts, n per label, interleaved."""
    return [[f"{label} example number {i}", label] for i in range(n_per_class) for label in labels]


FTPIPE = [str(Path(sys.executable).with_name("ftpipe"))]
"""The console script pyproject.toml installs beside this interpreter."""


def ftpipe(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ftpipe console script as a user would, offline, capturing its output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [*FTPIPE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


WORDS = {
    "good": ["good", "hello", "help", "please", "refund"],
    "bad": ["bad", "late", "crash", "charged", "twice"],
}


def prep_lm_rows(
    tmp_path: Path, model_dir: Path, rows: list[dict[str, Any]], name: str, **data: Any
) -> subprocess.CompletedProcess:
    """Run `ftpipe prep` on causal-LM `rows` (written to `name`) with the `data` keys given."""
    config = {
        "data": {"train": str(write_jsonl(tmp_path / name, rows)), "task": "causal-lm",
                 "output_dir": str(tmp_path / "prep"), **data},
        "model": {"name": str(model_dir)},
    }  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return ftpipe("prep", "--config", str(path))


def separable_rows(n_per_class: int, seed: int = 0) -> list[list[str]]:
    """Rows whose words give the label away: a frozen probe separates them easily."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_per_class):
        for label, words in WORDS.items():
            text = " ".join(rng.choice(words, size=4)) + f" {'a ' * (i % 5)}the"
            rows.append([f"{text} {i}", label])
    return rows


def train_config(
    tmp_path: Path, model_dir: Path, *overrides: str, rows_per_class: int = 40
) -> Config:
    """A prepared, learnable tiny run: separable rows on a tiny model, all paths under tmp_path.

    Prep runs here, so the returned config is ready for the training core.
    """
    from ftpipe.config import apply_overrides
    from ftpipe.config.load import validate_config
    from ftpipe.data import run_prep

    tmp_path.mkdir(parents=True, exist_ok=True)
    train = write_csv(tmp_path / "train.csv", separable_rows(rows_per_class))
    raw = {
        "seed": 7,
        "data": {
            "train": str(train),
            "output_dir": str(tmp_path / "prep"),
            "max_length": 16,
            "eval_fraction": 0.25,
            "duplicates": "keep",
        },
        "model": {"name": str(model_dir)},
        "strategy": {"name": "full"},
        "train": {
            "batch_size": 8,
            "num_workers": 1,
            "epochs": 6,
            "lr": 3e-3,
            "head_lr": 3e-2,
            "output_dir": str(tmp_path / "train"),
            "cache_dir": str(tmp_path / "cache"),
            "log_every_steps": 5,
        },
    }
    config = validate_config(apply_overrides(raw, overrides))
    run_prep(config)
    return config


def save_wordpiece_tokenizer(directory: Path, tokens: list[str]) -> dict[str, int]:
    """Save a BERT-style WordPiece tokenizer of exactly `tokens` (specials first) to `directory`.

    Returns the vocabulary, token to id.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    directory.mkdir(parents=True, exist_ok=True)
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(directory)
    return vocab


def save_decoder_tokenizer(
    directory: Path,
    words: list[str],
    eos: bool = True,
    specials: tuple[str, ...] = (),
    chat_template: str | None = None,
) -> dict[str, int]:
    """Save a Llama-style word-level tokenizer: `<s>` opens every text, `</s>` is its EOS.

    The vocabulary is `<pad>`, `<unk>`, `<s>`, `</s>`, then `specials` (kept whole, as chat
    markers are), then `words`; with `eos` false the tokenizer names no end-of-text token.
    Returns the vocabulary, token to id.
    """
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    names = ["<pad>", "<unk>", "<s>", "</s>", *specials, *words]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(names))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer.add_special_tokens([AddedToken(t, normalized=False) for t in specials])
    directory.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
        **({"eos_token": "</s>"} if eos else {}),
    )  # fmt: skip
    fast.chat_template = chat_template
    fast.save_pretrained(directory)
    return vocab
