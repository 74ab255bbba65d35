"""Conversations rendered for causal-LM training: the chat template, the loss mask and EOS.

A conversation (`ftpipe.tasks.chat`) is rendered with a Jinja chat template: the tokenizer's
own (`data.chat_template: auto`), one shipped here (`chatml`, `llama3`, `plain`), or a `.jinja`
file. The loss covers the assistant turns only (every token with `data.train_on: all`), and
the mask comes from the rendered token ids, not from string offsets: for each assistant turn,
the conversation before it (with the generation prompt) and the conversation up to it are
rendered and encoded, both must be token prefixes of the whole, and the turn is the tokens
between them, through its EOS. The tokens a template writes after the EOS (a newline) are not
the answer and are not trained. A template that does not end an assistant turn with the
tokenizer's EOS is refused: the model would never learn to stop. The shipped templates end each
assistant turn with `eos_token`.

Truncation follows the rule for completions (`ftpipe.data.completions`): the conversation loses
tokens from the left first (its leading special tokens kept), the last assistant turn last.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ftpipe.config.schema import Config, DataConfig, ModelConfig
from ftpipe.data.completions import fit_row
from ftpipe.data.tokenize import Tokenized, count_words
from ftpipe.errors import DataError
from ftpipe.hub import resolve_model

TEMPLATES = {
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
        "{% if m.role == 'assistant' %}{{ eos_token }}{% else %}<|im_end|>{% endif %}\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}"
        "<|end_header_id|>\n\n{{ m.content }}"
        "{% if m.role == 'assistant' %}{{ eos_token }}{% else %}<|eot_id|>{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant"
        "<|end_header_id|>\n\n{% endif %}"
    ),
    "plain": (
        "{{ bos_token }}{% for m in messages %}"
        "{% if m.role == 'system' %}{{ m.content }}\n\n"
        "{% elif m.role == 'user' %}User: {{ m.content }}\n"
        "{% else %}Assistant: {{ m.content }}{{ eos_token }}\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
    ),
}
"""The templates ftpipe ships, by `data.chat_template` name."""


class ChatRenderer:
    """Renders conversations with one template and tokenizer: token ids and the loss mask."""

    def __init__(self, model: ModelConfig, data: DataConfig) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(
            resolve_model(model.name), revision=model.revision, trust_remote_code=False
        )
        self.template = _template(data.chat_template, self.tokenizer, model.name)
        if self.tokenizer.eos_token_id is None:
            raise DataError(
                f"The tokenizer of model.name={model.name!r} names no EOS token, so an assistant "
                "turn cannot be ended and the model would never learn to stop. Use a model "
                "whose tokenizer_config.json sets eos_token."
            )
        self.eos_id = int(self.tokenizer.eos_token_id)
        self.train_all = data.train_on == "all"  # every token, not only the assistant turns
        added = self.tokenizer.backend_tokenizer.get_added_tokens_decoder()
        self.specials = set(self.tokenizer.all_special_ids) | {
            i for i, token in added.items() if token.special
        }  # chat markers the tokenizer keeps whole count as special too
        self.unknown = self.tokenizer.unk_token_id
        self.where = (
            f"auto (the tokenizer of {model.name})"
            if data.chat_template == "auto"
            else data.chat_template
        )

    def encode(self, messages: list[dict[str, str]]) -> tuple[list[int], list[bool]]:
        """The whole conversation's token ids, and per token whether the loss covers it.

        Raises:
            DataError: If the template is not prefix-stable, or ends no assistant turn with EOS.
        """
        ids = self._ids(messages, False)
        trained = [False] * len(ids)
        for turn, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before, upto = self._ids(messages[:turn], True), self._ids(messages[: turn + 1], False)
            if ids[: len(before)] != before or ids[: len(upto)] != upto:
                raise DataError(
                    f"data.chat_template={self.where}: rendering a conversation turn by turn "
                    "does not give the same tokens as rendering it whole, so the assistant turns "
                    "cannot be located in the token ids. Use chatml, llama3 or plain."
                )
            span = upto[len(before) :]
            if self.eos_id not in span:
                raise DataError(
                    f"data.chat_template={self.where} does not end an assistant turn with the "
                    f"EOS token ({self.tokenizer.eos_token}), so a model tuned on it would not "
                    "learn to stop. Use chatml, llama3 or plain, which do."
                )
            end = len(before) + len(span) - span[::-1].index(self.eos_id)
            trained[len(before) : end] = [True] * (end - len(before))
        return ids, trained

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation so far, rendered up to the assistant's turn (generation prompt)."""
        return self._ids(messages, True)

    def _ids(self, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=False,
            add_generation_prompt=generation_prompt,
        )  # fmt: skip
        return self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids


def template_digest(config: Config) -> str | None:
    """sha256 of the chat template conversations render with; None without conversations."""
    if config.data.messages_column is None:
        return None
    renderer = ChatRenderer(config.model, config.data)
    source = renderer.template or renderer.tokenizer.chat_template
    if not isinstance(source, str):  # a tokenizer may carry several named templates
        source = json.dumps(source, sort_keys=True)
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def tokenize_chats(renderer: ChatRenderer, texts: list[str], max_length: int) -> Tokenized:
    """Encode canonical conversations (`ftpipe.tasks.chat.canonical`), at most `max_length` each.

    Returns:
        Token ids with `targets` (the ids the loss covers, -100 elsewhere: the assistant
        turns, or every token with `data.train_on: all`) and the rows trimmed and cut counted.
    """
    backend = renderer.tokenizer.backend_tokenizer
    input_ids, targets = [], []
    lengths = np.empty(len(texts), dtype=np.int64)
    pieces = words = unknown = trimmed = cut = 0
    for row, text in enumerate(texts):
        messages = json.loads(text)
        ids, trained = renderer.encode(messages)
        lengths[row] = len(ids)
        pieces += sum(i not in renderer.specials for i in ids)
        unknown += ids.count(renderer.unknown) if renderer.unknown is not None else 0
        words += sum(count_words(backend.encode(m["content"], add_special_tokens=False))
                     for m in messages)  # fmt: skip
        ids, trained, was_trimmed, was_cut = _fit_conversation(ids, trained, renderer, max_length)
        trimmed, cut = trimmed + was_trimmed, cut + was_cut
        input_ids.append(ids)
        if renderer.train_all:  # the mask still placed the cut; now every token trains
            trained = [True] * len(ids)
        targets.append([i if t else -100 for i, t in zip(ids, trained, strict=True)])
    return Tokenized(
        input_ids=input_ids, token_type_ids=None, second_starts=None, lengths=lengths,
        pieces=pieces, words=words, unknown=unknown, trimmed_prompts=trimmed, cut_completions=cut,
        targets=targets,
    )  # fmt: skip


def _fit_conversation(
    ids: list[int], trained: list[bool], renderer: ChatRenderer, max_length: int
) -> tuple[list[int], list[bool], bool, bool]:
    """Trim from the left, keeping the leading special tokens, then cut the last turn.

    A turn whose start was trimmed away is kept as context but not trained: its remaining
    tokens would teach an answer without its beginning.
    """
    if len(ids) <= max_length:
        return ids, trained, False, False
    lead = next((i for i, token in enumerate(ids) if token not in renderer.specials), len(ids))
    last = len(trained) - trained[::-1].index(True)  # the last assistant turn's end
    first = last
    while first > 0 and trained[first - 1]:
        first -= 1
    positions = list(range(len(ids)))
    head, target, _, was_cut = fit_row(
        (positions[:lead], positions[lead:first], []), positions[first:last], max_length
    )
    kept = head + target
    marks = [trained[p] for p in kept]
    at = lead  # the first kept position after the leading special tokens
    while at < len(head) and marks[at] and kept[at] > 0 and trained[kept[at] - 1]:
        marks[at] = False  # this turn began before the cut: keep as context only
        at += 1
    return [ids[p] for p in kept], marks, len(head) < first, was_cut


def _template(name: str, tokenizer: Any, model: str) -> str | None:
    """The Jinja source `data.chat_template` names (None: the tokenizer's own).

    Raises:
        DataError: If `auto` finds no template in the tokenizer, or a file cannot be read.
    """
    if name == "auto":
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(
                f"The tokenizer of model.name={model!r} has no chat template. Set "
                "data.chat_template to chatml, llama3 or plain (shipped with ftpipe), or to a "
                ".jinja file."
            )
        return None
    if name in TEMPLATES:
        return TEMPLATES[name]
    path = Path(name).expanduser()
    if path.suffix != ".jinja" or not path.is_file():
        raise DataError(
            f"data.chat_template={name!r} is neither auto, a shipped template (chatml, llama3, "
            "plain) nor an existing .jinja file."
        )
    return path.read_text(encoding="utf-8")
