"""Causal-LM fine-tuning: prompt + completion rows, loss on the completion only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ftpipe.config import apply_overrides
from ftpipe.config.load import validate_config
from ftpipe.data import run_prep
from ftpipe.data.prepared import load_prepared
from ftpipe.tasks import get_task
from ftpipe.train.batching import BatchSource
from ftpipe.train.local import train_local
from tests.helpers import write_jsonl

PROMPTS = ["my order is", "my card was", "the app", "hello my login"]
COMPLETIONS = ["late please", "charged twice", "crash", "password reset"]


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A random-init 2-layer Llama with the tiny tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=29, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, pad_token_id=0,
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("tiny-lm")
    LlamaForCausalLM(config).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_tokenizer_dir / name, directory / name)
    return directory


def lm_config(tmp_path: Path, model_dir: Path, *overrides: str):
    rows = [
        {"prompt": f"{p} {'a ' * (i % 3)}", "completion": c}
        for i in range(12)
        for p, c in zip(PROMPTS, COMPLETIONS, strict=True)
    ]
    raw = {
        "data": {
            "train": str(write_jsonl(tmp_path / "train.jsonl", rows)),
            "task": "causal-lm",
            "text_column": "prompt",
            "completion_column": "completion",
            "duplicates": "keep",
            "max_length": 16,
            "output_dir": str(tmp_path / "prep"),
        },
        "model": {"name": str(model_dir)},
        "strategy": {"name": "full"},
        "train": {
            "batch_size": 8, "num_workers": 1, "epochs": 6, "lr": 5e-3, "head_lr": 5e-3,
            "output_dir": str(tmp_path / "train"),
        },
    }  # fmt: skip
    config = validate_config(apply_overrides(raw, overrides))
    run_prep(config)
    return config


def test_prep_stores_prompt_lengths_and_no_label_map(tmp_path, tiny_lm_dir):
    config = lm_config(tmp_path, tiny_lm_dir)
    data = load_prepared(config.data.output_dir)
    assert data.labels is None
    assert not (Path(config.data.output_dir) / "label_map.json").exists()
    split = data.splits["train"]
    assert split.token_type_ids is None and split.prompt_lengths is not None
    # "[CLS] my order is [SEP]" is the prompt; "late please [SEP]" the completion.
    row = next(i for i, ids in enumerate(split.input_ids) if len(ids) == 8)
    assert split.prompt_lengths[row] == 5
    assert split.input_ids[row][0] == 2 and split.input_ids[row][4] == 3  # [CLS] ... [SEP]


def test_labels_mask_padding_and_the_prompt(tmp_path, tiny_lm_dir):
    config = lm_config(tmp_path, tiny_lm_dir)
    split = load_prepared(config.data.output_dir).splits["train"]
    source = BatchSource(split, pad_id=0, task=get_task("causal-lm"))
    rows = np.arange(4)
    batch = source.batch(rows, torch.device("cpu"))
    for j, row in enumerate(rows):
        prompt, length = split.prompt_lengths[row], len(split.input_ids[row])
        labels = batch["labels"][j]
        assert (labels[:prompt] == -100).all()
        assert labels[prompt:length].tolist() == split.input_ids[row][prompt:]
        assert (labels[length:] == -100).all()


def test_language_model_learns_its_completions_and_exports(tmp_path, tiny_lm_dir):
    from transformers import AutoModelForCausalLM

    config = lm_config(tmp_path, tiny_lm_dir)
    outcome = train_local(config)
    latest = max(Path(outcome.best_checkpoint).parent.glob("step-*"))
    history = json.loads((latest / "trainer_state.json").read_text())["history"]
    assert history[-1]["perplexity"] < history[0]["perplexity"] / 2
    assert outcome.metrics["perplexity"] == pytest.approx(np.exp(outcome.metrics["loss"]))
    model = AutoModelForCausalLM.from_pretrained(outcome.model_dir)
    assert json.loads((Path(outcome.model_dir) / "ftpipe.json").read_text())["task"] == "causal-lm"
    assert model.config.num_hidden_layers == 2


def test_completion_column_needs_the_causal_lm_task(tmp_path):
    from ftpipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"completion_column needs data\.task=causal-lm"):
        validate_config({"data": {"train": "x.csv", "completion_column": "answer"}})
