"""Prompt + completion rows for causal LMs: EOS at the end, the prompt trimmed first, counted."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from ftpipe.config.load import validate_config
from ftpipe.data import run_prep
from ftpipe.data.prepared import PrepDir, load_prepared
from ftpipe.errors import ConfigError, DataError
from ftpipe.tasks import get_task
from ftpipe.train.batching import BatchSource
from tests.helpers import save_decoder_tokenizer, write_jsonl

WORDS = ["my", "order", "is", "late", "please", "card", "was", "charged", "twice", "help"]


@pytest.fixture
def lm_dir(tmp_path):
    directory = tmp_path / "lm"
    return directory, save_decoder_tokenizer(directory, WORDS)


def prepared(tmp_path, model_dir, rows, max_length=16, **data):
    config = validate_config(
        {
            "data": {
                "train": str(write_jsonl(tmp_path / "train.jsonl", rows)),
                "task": "causal-lm", "text_column": "prompt", "completion_column": "completion",
                "eval_fraction": 0.5, "duplicates": "keep", "max_length": max_length,
                "output_dir": str(tmp_path / "prep"), **data,
            },
            "model": {"name": str(model_dir)},
        }
    )  # fmt: skip
    run_prep(config)
    return config, load_prepared(config.data.output_dir)


def rows_of(data, vocab):
    """Each prepared row as (words, prompt length), train and eval together; and the split."""
    names = {i: token for token, i in vocab.items()}
    split = data.splits["train"].concat(data.splits["eval"])
    pairs = zip(split.input_ids, split.prompt_lengths.tolist(), strict=True)
    return split, [([names[i] for i in ids], n) for ids, n in pairs]


def distinct(prompt: str, completion: str) -> list[dict[str, str]]:
    """Four rows that differ in their last prompt word (prep drops rows that leak across splits)."""
    return [
        {"prompt": f"{prompt} {w}", "completion": completion} for w in ("is", "was", "my", "help")
    ]


def test_a_completion_ends_with_eos_and_only_it_is_trained(tmp_path, lm_dir):
    model_dir, vocab = lm_dir
    config, data = prepared(tmp_path, model_dir, distinct("my order", "late please"))
    split, words = rows_of(data, vocab)
    assert (["<s>", "my", "order", "is", "late", "please", "</s>"], 4) in words
    # The loss mask, read off the token ids: the completion and its EOS, nothing else.
    batch = BatchSource(split, vocab["<pad>"], get_task("causal-lm")).batch(
        np.arange(len(split)), torch.device("cpu")
    )
    for j, ids in enumerate(split.input_ids):
        assert batch["labels"][j, : len(ids)].tolist() == [-100] * 4 + ids[4:]
    stats = PrepDir.open(config.data.output_dir).stats["splits"]
    assert {s["trimmed_prompts"] for s in stats.values()} == {0}
    assert {s["cut_completions"] for s in stats.values()} == {0}


@pytest.mark.parametrize(("train_on", "masked"), [("auto", 4), ("completion", 4), ("all", 0)])
def test_train_on_all_trains_the_prompt_too(tmp_path, lm_dir, train_on, masked):
    model_dir, vocab = lm_dir
    _, data = prepared(tmp_path, model_dir, distinct("my order", "late please"), train_on=train_on)
    split, words = rows_of(data, vocab)
    assert (["<s>", "my", "order", "is", "late", "please", "</s>"], masked) in words
    # Read off the token ids: every token with `all` (the first is no one's next token).
    batch = BatchSource(split, vocab["<pad>"], get_task("causal-lm")).batch(
        np.arange(len(split)), torch.device("cpu")
    )
    for j, ids in enumerate(split.input_ids):
        assert batch["labels"][j, : len(ids)].tolist() == [-100] * masked + ids[masked:]
        assert ids[-1] == vocab["</s>"]


def test_a_long_prompt_loses_its_start_and_the_completion_stays_whole(tmp_path, lm_dir, caplog):
    model_dir, vocab = lm_dir
    prompt = " ".join(WORDS * 2)  # 20 words, then one more
    with caplog.at_level(logging.WARNING, logger="ftpipe.data.prep"):
        config, data = prepared(tmp_path, model_dir, distinct(prompt, "late please"), max_length=8)
    _, words = rows_of(data, vocab)
    # <s> stays; the last 4 prompt words fit beside the completion and its EOS.
    assert (["<s>", *WORDS[-3:], "is", "late", "please", "</s>"], 5) in words
    stats = PrepDir.open(config.data.output_dir).stats["splits"]
    assert sum(s["trimmed_prompts"] for s in stats.values()) == 4
    assert sum(s["cut_completions"] for s in stats.values()) == 0
    assert "lost prompt text from the left" in caplog.text


def test_a_completion_too_long_for_any_prompt_is_cut_and_counted(tmp_path, lm_dir):
    model_dir, vocab = lm_dir
    completion = " ".join(WORDS)  # 10 words, 11 tokens with EOS
    config, data = prepared(tmp_path, model_dir, distinct("my order", completion), max_length=8)
    _, words = rows_of(data, vocab)
    # The prompt's text goes first; then the completion keeps its start, never nothing.
    assert words[0] == (["<s>", *WORDS[:7]], 1)
    stats = PrepDir.open(config.data.output_dir).stats["splits"]
    assert sum(s["cut_completions"] for s in stats.values()) == 4


def test_a_tokenizer_without_an_end_of_text_token_is_refused(tmp_path):
    model_dir = tmp_path / "lm"
    save_decoder_tokenizer(model_dir, WORDS, eos=False)
    rows = distinct("my order", "late please")
    with pytest.raises(DataError, match=r"names no end-of-text \(EOS\) token"):
        prepared(tmp_path, model_dir, rows)


def test_data_prepared_in_the_earlier_layout_is_refused(tmp_path, lm_dir):
    model_dir, _ = lm_dir
    config, _ = prepared(tmp_path, model_dir, distinct("my order", "late please"))
    path = PrepDir.open(config.data.output_dir).fingerprint_path
    record = json.loads(path.read_text())
    assert record["layout"] == 2
    del record["layout"]  # as an ftpipe before EOS-ended completions wrote it
    path.write_text(json.dumps(record))
    with pytest.raises(
        ConfigError, match=r"laid out as version 1, and this ftpipe reads version 2"
    ):
        PrepDir.check_config(config, "train")
