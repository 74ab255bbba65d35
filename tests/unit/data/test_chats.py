"""Conversations for causal LMs: templates, the assistant-only mask, checks, truncation, training.

The tokenizer is word-level, so each token is a word or a chat marker and the expected ids can
be written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftpipe.config import apply_overrides
from ftpipe.config.load import validate_config
from ftpipe.data import run_prep
from ftpipe.data.chats import TEMPLATES, ChatRenderer
from ftpipe.data.prepared import PrepDir, load_prepared
from ftpipe.errors import ConfigError, DataError
from ftpipe.tasks import get_task
from ftpipe.train.batching import BatchSource
from tests.helpers import prep_lm_rows, save_decoder_tokenizer, write_jsonl

MARKERS = ("<|im_start|>", "<|im_end|>")
WORDS = ["system", "user", "assistant", "User:", "Assistant:", "you", "are", "a", "help", "bot",
         "my", "order", "is", "late", "please", "wait", "thanks", "card", "was", "charged",
         "twice", "refund", "sent", "hello", "hi"]  # fmt: skip
CONVERSATION = [
    {"role": "system", "content": "you are a help bot"},
    {"role": "user", "content": "my order is late"},
    {"role": "assistant", "content": "please wait"},
    {"role": "user", "content": "thanks"},
    {"role": "assistant", "content": "hi"},
]


@pytest.fixture
def chat_model(tmp_path):
    """A tokenizer carrying chatml as its own template, and its vocabulary."""
    directory = tmp_path / "chat-lm"
    vocab = save_decoder_tokenizer(directory, WORDS, specials=MARKERS,
                                   chat_template=TEMPLATES["chatml"])  # fmt: skip
    return directory, vocab


def renderer(model_dir, template="auto"):
    config = validate_config({
        "data": {"train": "x.jsonl", "task": "causal-lm", "messages_column": "messages",
                 "chat_template": template},
        "model": {"name": str(model_dir)},
    })  # fmt: skip
    return ChatRenderer(config.model, config.data)


def words(ids, vocab):
    names = {i: token for token, i in vocab.items()}
    return [names[i] for i in ids]


@pytest.mark.parametrize(
    ("template", "expected", "answers"),
    [
        ("auto", ["<|im_start|>", "system", "you", "are", "a", "help", "bot", "<|im_end|>",
                  "<|im_start|>", "user", "my", "order", "is", "late", "<|im_end|>",
                  "<|im_start|>", "assistant", "please", "wait", "</s>",
                  "<|im_start|>", "user", "thanks", "<|im_end|>",
                  "<|im_start|>", "assistant", "hi", "</s>"],
         [["please", "wait", "</s>"], ["hi", "</s>"]]),
        ("plain", ["<s>", "you", "are", "a", "help", "bot", "User:", "my", "order", "is", "late",
                   "Assistant:", "please", "wait", "</s>", "User:", "thanks",
                   "Assistant:", "hi", "</s>"],
         [["please", "wait", "</s>"], ["hi", "</s>"]]),
    ],
    ids=["auto-chatml", "plain"],
)  # fmt: skip
def test_the_rendered_chat_matches_the_template_and_the_mask_its_answers(
    chat_model, template, expected, answers
):
    model_dir, vocab = chat_model
    ids, trained = renderer(model_dir, template).encode(CONVERSATION)
    assert words(ids, vocab) == expected
    # The mask covers exactly each assistant turn and its EOS, read off the token ids.
    spans, current = [], []
    for token, is_trained in zip(words(ids, vocab), trained, strict=True):
        if is_trained:
            current.append(token)
        elif current:
            spans, current = [*spans, current], []
    assert [*spans, *([current] if current else [])] == answers


def prep_chats(tmp_path, model_dir, rows, *overrides, **data):
    raw = {
        "data": {
            "train": str(write_jsonl(tmp_path / "chats.jsonl", rows)), "task": "causal-lm",
            "messages_column": "messages", "eval_fraction": 0.25, "duplicates": "keep",
            "max_length": 48, "output_dir": str(tmp_path / "prep"), **data,
        },
        "model": {"name": str(model_dir)},
        "strategy": {"name": "full"},
        "train": {"batch_size": 4, "num_workers": 1, "epochs": 8, "lr": 5e-3, "head_lr": 5e-3,
                  "output_dir": str(tmp_path / "train")},
    }  # fmt: skip
    config = validate_config(apply_overrides(raw, overrides))
    run_prep(config)
    return config


def support_chats(n: int) -> list[dict]:
    """Short support conversations, OpenAI and ShareGPT spellings alternating."""
    pairs = [("my order is late", "please wait"), ("my card was charged twice", "refund sent"),
             ("hello", "hi"), ("thanks", "please wait")]  # fmt: skip
    rows = []
    for i in range(n):
        question, answer = pairs[i % len(pairs)]
        question += " please" * (i // len(pairs) % 3)  # distinct rows
        if i % 2:
            rows.append({"messages": [{"from": "human", "value": question},
                                      {"from": "gpt", "value": answer}]})  # fmt: skip
        else:
            rows.append({"messages": [{"role": "user", "content": question},
                                      {"role": "assistant", "content": answer}]})  # fmt: skip
    return rows


def test_prep_stores_the_assistant_tokens_as_the_only_targets(tmp_path, chat_model):
    model_dir, vocab = chat_model
    config = prep_chats(tmp_path, model_dir, support_chats(12))
    split = load_prepared(config.data.output_dir).splits["train"]
    assert split.prompt_lengths is None and split.token_labels is not None
    batch = BatchSource(split, vocab["<pad>"], get_task("causal-lm")).batch(
        np.arange(len(split)), torch.device("cpu")
    )
    for j, ids in enumerate(split.input_ids):
        tokens = words(ids, vocab)
        start = len(tokens) - 1 - tokens[::-1].index("assistant") + 1  # after the last header
        expected = [-100] * start + ids[start:]
        assert split.token_labels[j] == expected
        assert batch["labels"][j, : len(ids)].tolist() == expected
        assert tokens[-1] == "</s>"


@pytest.mark.parametrize("train_on", ["auto", "assistant", "all"])
def test_train_on_picks_the_assistant_turns_or_every_token(tmp_path, chat_model, train_on):
    model_dir, vocab = chat_model
    rows = [{"messages": CONVERSATION}, *support_chats(7)]
    config = prep_chats(tmp_path, model_dir, rows, train_on=train_on)
    data = load_prepared(config.data.output_dir)
    split = data.splits["train"].concat(data.splits["eval"])
    row = split.input_ids.index(renderer(model_dir).encode(CONVERSATION)[0])
    targets = [t for t in split.token_labels[row] if t != -100]
    if train_on == "all":  # every token, the assistant's EOS included
        assert split.token_labels == split.input_ids
    else:
        assert words(targets, vocab) == ["please", "wait", "</s>", "hi", "</s>"]


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([{"role": "user", "content": "hello"}, {"role": "user", "content": "hi"}],
         "message 2 is from the user where the assistant speaks next"),
        ([{"role": "user", "content": "hello"}, {"role": "assistant", "content": " "}],
         "message 2, an assistant turn, is empty"),
        ([{"role": "user", "content": "hello"}, {"role": "robot", "content": "hi"}],
         "message 2 has the unknown role 'robot'"),
        ([{"role": "user", "content": "hello"}],
         "does not end with an assistant turn"),
        ("hello", "the conversation is a str, not a list of messages"),
    ],
    ids=["order", "empty-answer", "unknown-role", "no-answer", "not-a-list"],
)  # fmt: skip
def test_a_bad_conversation_is_refused_naming_the_file_and_the_line(
    tmp_path, chat_model, messages, reason
):
    model_dir, _ = chat_model
    rows = support_chats(8)
    rows.insert(2, {"messages": messages})
    with pytest.raises(DataError, match=r"chats\.jsonl has 1 invalid row.*: line 3: ") as error:
        prep_chats(tmp_path, model_dir, rows)
    assert reason in str(error.value)


def test_a_bad_conversation_exits_2_from_the_command_line(tmp_path, chat_model):
    model_dir, _ = chat_model
    rows = support_chats(8)
    rows.insert(4, {"messages": [{"role": "assistant", "content": "hi"}]})
    result = prep_lm_rows(tmp_path, model_dir, rows, "chats.jsonl", messages_column="messages")
    assert result.returncode == 2, result.stderr
    assert "chats.jsonl has 1 invalid row" in result.stderr
    assert "line 5: message 1 is from the assistant" in result.stderr
    assert not (tmp_path / "prep").exists()


def test_a_long_conversation_loses_its_start_and_keeps_its_last_answer(tmp_path, chat_model):
    model_dir, vocab = chat_model
    long = {"messages": [*CONVERSATION[1:], {"role": "user", "content": "my card was charged"},
                         {"role": "assistant", "content": "refund sent"}]}  # fmt: skip
    config = prep_chats(tmp_path, model_dir, [*support_chats(8), long], max_length=14)
    data = load_prepared(config.data.output_dir)
    split = data.splits["train"].concat(data.splits["eval"])
    rows = [words(ids, vocab) for ids in split.input_ids]
    row = next(i for i, tokens in enumerate(rows) if "charged" in tokens and "twice" not in tokens)
    # The leading marker stays; the rest is the conversation's last 13 tokens.
    assert rows[row] == ["<|im_start|>", "</s>", "<|im_start|>", "user", "my", "card", "was",
                         "charged", "<|im_end|>", "<|im_start|>", "assistant", "refund", "sent",
                         "</s>"]  # fmt: skip
    # The EOS left of the turn before is context, not a target: its answer was trimmed away.
    targets = [t for t in split.token_labels[row] if t != -100]
    assert words(targets, vocab) == ["refund", "sent", "</s>"]
    stats = PrepDir.open(config.data.output_dir).stats["splits"]
    assert sum(s["trimmed_prompts"] for s in stats.values()) == 1
    assert sum(s["cut_completions"] for s in stats.values()) == 0


def test_a_template_that_never_ends_an_answer_with_eos_is_refused(tmp_path):
    model_dir = tmp_path / "no-eos-template"
    template = TEMPLATES["chatml"].replace("{{ eos_token }}", "<|im_end|>")
    save_decoder_tokenizer(model_dir, WORDS, specials=MARKERS, chat_template=template)
    with pytest.raises(DataError, match=r"does not end an assistant turn with the EOS token"):
        renderer(model_dir).encode(CONVERSATION)


def test_a_template_file_is_read(tmp_path, chat_model):
    model_dir, vocab = chat_model
    path = tmp_path / "mine.jinja"
    path.write_text(TEMPLATES["plain"])
    ids, _ = renderer(model_dir, str(path)).encode(CONVERSATION[1:3])
    assert words(ids, vocab) == ["<s>", "User:", "my", "order", "is", "late", "Assistant:",
                                 "please", "wait", "</s>"]  # fmt: skip


@pytest.mark.parametrize(
    "data",
    [
        {"messages_column": "messages", "completion_column": "answer", "task": "causal-lm"},
        {"messages_column": "messages"},
        {"chat_template": "chatml", "task": "causal-lm"},
    ],
    ids=["with-completions", "not-causal-lm", "template-without-conversations"],
)
def test_conversation_settings_that_cannot_work_are_refused(data):
    with pytest.raises(ConfigError, match=r"data\.(messages_column|chat_template)"):
        validate_config({"data": {"train": "x.jsonl", **data}})


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        ({"train_on": "assistant"},
         r"data\.train_on=assistant trains a conversation's assistant turns, and these rows "
         r"are not conversations"),
        ({"train_on": "completion", "messages_column": "messages"},
         r"data\.train_on=completion trains each row's completion, and these rows are "
         r"conversations"),
        ({"train_on": "completion"}, r"these rows are plain text"),
    ],
    ids=["assistant-without-conversations", "completion-of-conversations", "completion-of-text"],
)  # fmt: skip
def test_train_on_what_the_rows_do_not_hold_is_refused(data, refusal):
    with pytest.raises(ConfigError, match=refusal):
        validate_config({"data": {"train": "x.jsonl", "task": "causal-lm", **data}})
