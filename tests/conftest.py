"""Shared fixtures: a tiny tokenizer built from scratch, config and file builders."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ftpipe.config import Config, apply_overrides
from ftpipe.config.load import validate_config

# As in an activated environment: processes Ray starts for jobs find this venv's `ftpipe`.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "a", "my", "order", "is", "late", "refund", "please", "card", "was", "charged",
    "twice", "hello", "help", "login", "password", "reset", "app", "crash", "good", "bad",
    "##s", "##ed", "##ing",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local model directory holding a 29-token WordPiece tokenizer (BERT-style)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(TINY_VOCAB)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    directory = tmp_path_factory.mktemp("tiny-tokenizer")
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(directory)
    return directory


@pytest.fixture
def make_config(tmp_path: Path, tiny_tokenizer_dir: Path):
    """Build a Config from data-section keys, on the tiny tokenizer, writing under tmp_path."""

    def build(*overrides: str, **data: Any) -> Config:
        raw = {
            "data": {"output_dir": str(tmp_path / "prep"), "max_length": 16, **data},
            "model": {"name": str(tiny_tokenizer_dir)},
        }
        return validate_config(apply_overrides(raw, overrides))

    return build


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """A local model directory: a random-init 2-layer BERT classifier (safetensors) + tokenizer."""
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
    )
    directory = tmp_path_factory.mktemp("tiny-model")
    BertForSequenceClassification(config).save_pretrained(directory, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_tokenizer_dir / name, directory / name)
    return directory
