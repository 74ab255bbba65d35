"""The recommender for language models: target tokens, the base model's perplexity on them
against the reference prose's, the four cases, and the stage end to end on prepared data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import transformers as hf

from ftpipe.config import Config
from ftpipe.config.load import validate_config
from ftpipe.config.rules import rules_for
from ftpipe.data import run_prep
from ftpipe.data.chats import TEMPLATES
from ftpipe.data.prepared import PrepDir, Split
from ftpipe.stages import recommend as stage
from ftpipe.strategies import prepare
from ftpipe.strategies.domain import reference_sentences
from ftpipe.strategies.lm_recommend import (
    LARGE_TARGET_TOKENS,
    PROMPT_STRATEGY,
    LmMeasurements,
    count_targets,
    decide_lm,
    target_nll,
)
from ftpipe.strategies.recommend import resolve_auto
from ftpipe.tasks import get_task
from ftpipe.tune.space import parse_space
from tests.helpers import save_decoder_tokenizer, write_jsonl

LM = get_task("causal-lm")
MARKERS = ("<|im_start|>", "<|im_end|>")
ENGLISH = [sentence.split() for sentence in reference_sentences()]
FOREIGN = [f"{a}{b}{c}" for a in "qxz" for b in "kvj" for c in "wyhfg"]
"""Words of the vocabulary that the reference prose never uses."""


def llama(vocab: dict[str, int]) -> hf.LlamaForCausalLM:
    shape = {"vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64,
             "pad_token_id": vocab["<pad>"], "bos_token_id": vocab["<s>"],
             "eos_token_id": vocab["</s>"]}  # fmt: skip
    torch.manual_seed(0)
    return hf.LlamaForCausalLM(hf.LlamaConfig(**shape))


@pytest.fixture(scope="module")
def english_lm(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """A tiny Llama that knows English word frequencies, and its vocabulary.

    Its weights are set so that it predicts every token with the word frequencies of the
    reference prose (add-one smoothed, EOS as often as a sentence ends), whatever the context:
    every input embeds alike, the blocks add nothing (zero output projections), and the output
    layer turns the normalised state into the log frequencies. So English is easy for it and
    the `FOREIGN` words it never met are hard, as for a model pretrained on English.
    """
    directory = tmp_path_factory.mktemp("english-lm")
    words = sorted({word for sentence in ENGLISH for word in sentence} | {"user", "assistant"})
    words += FOREIGN
    vocab = save_decoder_tokenizer(directory, words, specials=MARKERS,
                                   chat_template=TEMPLATES["chatml"])  # fmt: skip
    counts = torch.ones(len(vocab), dtype=torch.float64)
    for word in (word for sentence in ENGLISH for word in sentence):
        counts[vocab[word]] += 1
    counts[vocab["</s>"]] += len(ENGLISH)
    model = llama(vocab)
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(1.0)  # RMS-normalised, the state stays all ones
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = (counts / counts.sum()).log().float()
    model.save_pretrained(directory)
    return directory, vocab


def naive_nll(model, rows: list[list[int]], trained: list[list[bool]]) -> tuple[float, int]:
    """Each row alone, unpadded: -log p(token | tokens before it) at each trained position."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, is_trained in zip(rows, trained, strict=True):
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            for i in range(1, len(ids)):
                if is_trained[i]:
                    total -= logits[i - 1].log_softmax(-1)[ids[i]].item()
                    count += 1
    return total, count


def test_the_target_perplexity_equals_a_naive_per_row_computation(tmp_path):
    vocab = save_decoder_tokenizer(tmp_path, ["my", "order", "is", "late", "please", "wait"])
    model = llama(vocab).eval()  # random weights: every prediction depends on the context
    rng = np.random.default_rng(0)
    rows = [[2, *rng.integers(4, len(vocab), n).tolist(), 3] for n in (2, 7, 4, 11, 5, 1)]
    prompts = np.array([1, 3, 2, 6, 1, 1])
    completions = Split(rows, None, np.zeros(6, dtype=np.int64), prompt_lengths=prompts)
    # conversations: targets per token, two trained spans in one row, none in another
    labels = [[t if i in {2, 3, len(r) - 1} else -100 for i, t in enumerate(r)] for r in rows]
    labels[5] = [-100] * len(rows[5])
    conversations = Split(rows, None, np.zeros(6, dtype=np.int64), token_labels=labels)
    expected = {
        "completions": [
            [i >= n for i in range(len(r))] for r, n in zip(rows, prompts, strict=True)
        ],
        "conversations": [[t != -100 for t in row] for row in labels],
    }
    for name, split in (("completions", completions), ("conversations", conversations)):
        naive = naive_nll(model, rows, expected[name])
        # a few rows per batch: padding and the batch order must change nothing
        total, count = target_nll(model, LM, split, vocab["<pad>"], tokens_per_batch=26)
        assert count == naive[1] == count_targets(LM, split, vocab["<pad>"])
        assert np.exp(total / count) == pytest.approx(np.exp(naive[0] / naive[1]), rel=1e-6)


def completion_rows(n: int, foreign: bool = False) -> list[dict[str, str]]:
    """Prompt + completion rows: English prompts, and reference sentences or as many random
    `FOREIGN` words as completions."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        sentence = ENGLISH[i % len(ENGLISH)][:10]
        completion = rng.choice(FOREIGN, len(sentence)).tolist() if foreign else sentence
        rows.append({"prompt": " ".join(ENGLISH[i + 1][:4]), "completion": " ".join(completion)})
    return rows


def chat_rows(n: int) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": " ".join(ENGLISH[i][:5])},
                      {"role": "assistant", "content": " ".join(ENGLISH[i + 1][:10])}]}
        for i in range(n)
    ]  # fmt: skip


def prepped(tmp_path: Path, model_dir: Path, rows: list[dict]) -> Config:
    """Prepared causal-LM data under tmp_path, recommending into tmp_path/recommend."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    chats = "messages" in rows[0]
    columns = {"messages_column": "messages"} if chats else {
        "text_column": "prompt", "completion_column": "completion"}  # fmt: skip
    raw = {
        "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", rows)), "task": "causal-lm",
                 "eval_fraction": 0.25, "duplicates": "keep", "max_length": 32,
                 "output_dir": str(tmp_path / "prep"), **columns},
        "model": {"name": str(model_dir)},
        "recommend": {"output_dir": str(tmp_path / "recommend")},
    }  # fmt: skip
    config = validate_config(raw)
    run_prep(config)
    return config


def test_english_targets_are_similar_and_unknown_words_dissimilar(tmp_path, english_lm):
    model_dir, _ = english_lm
    picked = {}
    for name, foreign in (("english", False), ("foreign", True)):
        config = prepped(tmp_path / name, model_dir, completion_rows(40, foreign))
        picked[name] = stage.run(config)
    english, noise = picked["english"].measurements, picked["foreign"].measurements
    assert english.target_tokens == noise.target_tokens  # the same sizes: only the words differ
    assert english.perplexity_ratio <= 4.0 < noise.perplexity_ratio
    assert picked["english"].case == "small-similar"
    assert (picked["foreign"].case, picked["foreign"].strategy) == ("small-dissimilar", "freeze")
    assert picked["foreign"].freeze_layers == 1  # the lower half of 2 blocks
    text = picked["foreign"].text()
    assert (
        f"{noise.perplexity_ratio:.2f}x" in text and "beyond recommend.max_perplexity_ratio" in text
    )


@pytest.mark.parametrize("kind", ["completions", "conversations"])
def test_recommend_writes_its_choice_and_names_only_strategies_the_task_trains(
    tmp_path, english_lm, kind
):
    model_dir, _ = english_lm
    rows = completion_rows(40) if kind == "completions" else chat_rows(40)
    config = prepped(tmp_path, model_dir, rows)
    recommendation = stage.run(config)
    written = json.loads((tmp_path / "recommend" / "recommendation.json").read_text())
    assert written["strategy"] == recommendation.strategy
    assert (tmp_path / "recommend" / "recommendation.txt").read_text() == recommendation.text()
    # the size: tokens the loss covers, counted from the shards (the first token is never one)
    train = pq.read_table(PrepDir.open(config.data.output_dir).split_path("train")).to_pydict()
    if kind == "completions":
        expected = sum(len(ids) - p for ids, p in zip(train["input_ids"], train["prompt_length"],
                                                      strict=True))  # fmt: skip
    else:
        expected = sum(sum(t != -100 for t in labels[1:]) for labels in train["token_labels"])
    m = recommendation.measurements
    assert written["measurements"]["target_tokens"] == m.target_tokens == expected
    assert m.rows == len(train["input_ids"]) and m.perplexity_rows == min(m.rows, 64)
    assert f"Training targets: {expected:,} tokens the loss covers" in recommendation.text()
    # strategy.name=auto resolves to it, and every strategy the space names trains this model
    assert config.strategy.name == "auto"
    assert resolve_auto(config).strategy.name == recommendation.strategy
    parse_space(config, recommendation.search_space)
    for name in choices(recommendation.search_space):
        chosen = validate_config({**config.model_dump(mode="json"), "strategy": {"name": name}})
        trained = prepare(LM.load_model(str(model_dir), None), chosen).model
        assert any(p.requires_grad for p in trained.parameters())


def choices(space: dict[str, str]) -> list[str]:
    return space["strategy.name"].removeprefix("choice([").removesuffix("])").split(", ")


def measured(target_tokens: int, ratio: float) -> LmMeasurements:
    return LmMeasurements(1000, target_tokens, 64, 900, 30.0 * ratio, 12, 3000, 30.0, ratio)


@pytest.mark.parametrize(
    ("m", "case", "strategy"),
    [
        (measured(50_000, 0.8), "small-similar", PROMPT_STRATEGY),
        (measured(50_000, 1.0), "small-similar", PROMPT_STRATEGY),
        (measured(50_000, 2.0), "small-similar", "lora"),
        (measured(50_000, 4.0), "small-similar", "lora"),
        (measured(50_000, 4.1), "small-dissimilar", "freeze"),
        (measured(LARGE_TARGET_TOKENS, 0.5), "large-similar", "full"),
        (measured(LARGE_TARGET_TOKENS, 3.0), "large-similar", "full"),
        (measured(LARGE_TARGET_TOKENS, 9.0), "large-dissimilar", "full"),
    ],
)
def test_four_cases_for_language_models(m, case, strategy):
    config = validate_config({"data": {"train": "x.jsonl", "task": "causal-lm"}})
    recommendation = decide_lm(config, m, num_blocks=6)
    assert (recommendation.case, recommendation.strategy) == (case, strategy)
    assert recommendation.freeze_layers == (3 if strategy == "freeze" else 0)
    low, high = recommendation.lr_range
    assert low < high <= (3e-2 if strategy == PROMPT_STRATEGY else 1e-3)
    space = recommendation.search_space
    parse_space(config, space)  # every path and value is valid for a causal-lm config
    for name in choices(space):
        LM.check_strategy(name)
        assert not rules_for(name).needs_new_head
    rates = next(line for line in recommendation.text().splitlines() if "Learning rates" in line)
    if strategy in ("full", "freeze"):  # no new weights: train.head_lr would move nothing
        assert "train.head_lr" not in space and "no new head" in rates
    else:
        assert "train.head_lr" in space and "backbone frozen" in rates


def test_the_perplexity_threshold_is_the_configured_one():
    config = validate_config({"data": {"train": "x.jsonl", "task": "causal-lm"},
                              "recommend": {"max_perplexity_ratio": 10.0}})  # fmt: skip
    assert decide_lm(config, measured(50_000, 9.0), num_blocks=6).case == "small-similar"
