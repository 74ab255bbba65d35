"""Batched fast tokenization that also measures what truncation and the vocabulary lose.

The Rust tokenizer encodes each batch on all cores. Rows are first encoded untruncated, which
gives the true length and the word-piece and unknown-token counts for stats.json; only the
rows over `max_length` are encoded again with the tokenizer's own truncation, so special
tokens stay where the model expects them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer
from tqdm.auto import tqdm

from ftpipe.config.schema import ModelConfig
from ftpipe.errors import DataError, reason
from ftpipe.hub import resolve_model

CHUNK_ROWS = 8192
"""Rows per encode call: large enough to keep both cores busy, small enough for progress."""


@dataclass(frozen=True)
class Tokenized:
    """Token ids of one split plus the counts its statistics need."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    second_starts: list[int] | None
    """For pairs: where each row's second text begins (its first token); the row's length
    where none of it is left. Templates differ in type ids; sequence ids do not."""
    lengths: np.ndarray
    """Untruncated length of each example, special tokens included."""
    pieces: int
    """Word pieces (non-special tokens) over all examples."""
    words: int
    """Pre-tokenized words over all examples."""
    unknown: int
    """Unknown tokens over all examples."""
    windows: int = 0
    """Rows added by splitting long sentences of tagged words into windows."""
    lost_words: int = 0
    """Tagged words cut off by truncation (`data.stride: null`)."""
    trimmed_prompts: int = 0
    """Prompt + completion rows whose prompt lost text from the left to fit."""
    cut_completions: int = 0
    """Prompt + completion rows whose completion was cut even so."""
    targets: list[list[int]] | None = None
    """Per token of a conversation, the id the loss covers, or -100 (`ftpipe.data.chats`)."""


@dataclass
class TokenCounts:
    """What stats.json needs of a split's tokens, added up shard by shard."""

    lengths: list[np.ndarray] = field(default_factory=list)
    """Untruncated length of each example, per shard."""
    pieces: int = 0
    words: int = 0
    unknown: int = 0
    windows: int = 0
    lost_words: int = 0
    trimmed_prompts: int = 0
    cut_completions: int = 0

    def add(self, tokens: Tokenized) -> None:
        """Count one shard's tokens."""
        self.lengths.append(tokens.lengths)
        for name in ("pieces", "words", "unknown", "windows", "lost_words", "trimmed_prompts",
                     "cut_completions"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(tokens, name))

    @property
    def all_lengths(self) -> np.ndarray:
        """Untruncated length of every example of the split, in order."""
        return np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64)


def load_tokenizer(model: ModelConfig) -> Tokenizer:
    """Load the base model's fast tokenizer and return its Rust backend, untruncated.

    Raises:
        DataError: If the tokenizer cannot be loaded or has no fast (Rust) implementation.
    """
    from transformers import AutoTokenizer

    location = resolve_model(model.name)
    if location.startswith(("/", "./", "../", "~")) and not Path(location).expanduser().is_dir():
        raise DataError(
            f"model.name={model.name!r} looks like a local path, but there is no such directory. "
            "Point it at a directory holding tokenizer.json, or use the built-in alias "
            "all-MiniLM-L6-v2."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            location, revision=model.revision, trust_remote_code=False
        )
    except Exception as exc:  # Hub and file errors come in many types
        raise DataError(
            f"Cannot load the tokenizer of model.name={model.name!r}: {reason(exc)}. Use the "
            "built-in alias all-MiniLM-L6-v2, a local model directory, or a Hub id reachable "
            "from here."
        ) from None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise DataError(
            f"model.name={model.name!r} has no fast (Rust) tokenizer, which prep needs for "
            "batched tokenization. Use a model that ships tokenizer.json."
        )
    # A copy without the truncation and padding saved in tokenizer.json: prep measures true
    # lengths first and truncates only the rows that need it.
    untruncated = Tokenizer.from_str(backend.to_str())
    untruncated.no_truncation()
    untruncated.no_padding()
    return untruncated


def tokenizer_digest(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's full definition, for the data fingerprint."""
    return hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()


def tokenize(
    tokenizer: Tokenizer,
    texts: list[str],
    pairs: list[str] | None,
    max_length: int,
    desc: str = "tokenize",
) -> Tokenized:
    """Encode texts (or text pairs), truncated to `max_length` tokens.

    Args:
        tokenizer: An untruncated, unpadded tokenizer from `load_tokenizer`.
        texts: First (or only) texts.
        pairs: Second texts, or None.
        max_length: Longest allowed encoding, special tokens included.
        desc: Progress-bar label.
    """
    is_pair = pairs is not None
    inputs = texts if pairs is None else list(zip(texts, pairs, strict=True))
    specials = tokenizer.num_special_tokens_to_add(is_pair)
    unk_id = unknown_id(tokenizer)
    input_ids: list[list[int]] = []
    type_ids: list[list[int]] = []
    starts: list[int] = []
    lengths = np.empty(len(inputs), dtype=np.int64)
    pieces = words = unknown = 0
    with tqdm(total=len(inputs), desc=desc, unit="rows", disable=None, leave=False) as bar:
        for start in range(0, len(inputs), CHUNK_ROWS):
            encodings = tokenizer.encode_batch(inputs[start : start + CHUNK_ROWS])
            for offset, enc in enumerate(encodings):
                ids = enc.ids
                lengths[start + offset] = len(ids)
                pieces += len(ids) - specials
                words += count_words(enc, is_pair)
                if unk_id is not None:
                    unknown += ids.count(unk_id)
                input_ids.append(ids)
                if is_pair:
                    type_ids.append(enc.type_ids)
                    starts.append(_second_start(enc))
            bar.update(len(encodings))
    pair_columns = (type_ids, starts) if is_pair else None
    _truncate(tokenizer, inputs, lengths, max_length, input_ids, pair_columns)
    return Tokenized(
        input_ids=input_ids,
        token_type_ids=type_ids if is_pair else None,
        second_starts=starts if is_pair else None,
        lengths=lengths,
        pieces=pieces,
        words=words,
        unknown=unknown,
    )


def count_words(enc: Encoding, is_pair: bool = False) -> int:
    """Pre-tokenized words in one encoding; special tokens have no word id."""
    if is_pair:
        return len(
            {(s, w) for s, w in zip(enc.sequence_ids, enc.word_ids, strict=True) if w is not None}
        )
    # Word ids of one sequence count up from 0, so the last one gives the count; scanning from
    # the end touches only the trailing special tokens.
    return next((w for w in reversed(enc.word_ids) if w is not None), -1) + 1


def _truncate(
    tokenizer: Tokenizer,
    inputs: list,
    lengths: np.ndarray,
    max_length: int,
    input_ids: list[list[int]],
    pair_columns: tuple[list[list[int]], list[int]] | None,
) -> None:
    """Re-encode only the over-long rows with the tokenizer's own truncation, in place."""
    long_rows = np.flatnonzero(lengths > max_length).tolist()
    if not long_rows:
        return
    if max_length <= tokenizer.num_special_tokens_to_add(pair_columns is not None):
        raise DataError(
            f"data.max_length={max_length} leaves no room for text after the special tokens. "
            "Raise data.max_length."
        )
    truncating = Tokenizer.from_str(tokenizer.to_str())
    truncating.enable_truncation(max_length, strategy="longest_first")
    encoded = truncating.encode_batch([inputs[i] for i in long_rows])
    for row, enc in zip(long_rows, encoded, strict=True):
        input_ids[row] = enc.ids
        if pair_columns is not None:
            pair_columns[0][row] = enc.type_ids
            pair_columns[1][row] = _second_start(enc)


def _second_start(enc: Encoding) -> int:
    return next((i for i, s in enumerate(enc.sequence_ids) if s == 1), len(enc.ids))


def unknown_id(tokenizer: Tokenizer) -> int | None:
    """The id of the tokenizer's unknown token, or None when its model has none."""
    # WordPiece and Unigram models name an unknown token; byte-level BPE has none (rate 0).
    unk = getattr(tokenizer.model, "unk_token", None)
    return tokenizer.token_to_id(unk) if unk else None
