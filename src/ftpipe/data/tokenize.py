"""Batched fast tokenization that also measures what truncation and the vocabulary lose.

The Rust tokenizer encodes each batch on all cores. Rows are first encoded untruncated, which
gives the true length and the word-piece and unknown-token counts for stats.json; only the
rows over `max_length` are encoded again with the tokenizer's own truncation, so special
tokens stay where the model expects them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from ftpipe.config.schema import ModelConfig
from ftpipe.errors import DataError
from ftpipe.hub import resolve_model

CHUNK_ROWS = 8192
"""Rows per encode call: large enough to keep both cores busy, small enough for progress."""


@dataclass(frozen=True)
class Tokenized:
    """Token ids of one split plus the counts its statistics need."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    lengths: np.ndarray
    """Untruncated length of each example, special tokens included."""
    pieces: int
    """Word pieces (non-special tokens) over all examples."""
    words: int
    """Pre-tokenized words over all examples."""
    unknown: int
    """Unknown tokens over all examples."""


def load_tokenizer(model: ModelConfig) -> Tokenizer:
    """Load the base model's fast tokenizer and return its Rust backend.

    Raises:
        DataError: If the tokenizer cannot be loaded or has no fast (Rust) implementation.
    """
    from transformers import AutoTokenizer

    location = resolve_model(model.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            location, revision=model.revision, trust_remote_code=False
        )
    except Exception as exc:  # Hub and file errors come in many types
        raise DataError(
            f"Cannot load the tokenizer of model.name={model.name!r}: {exc}. Use the built-in "
            "alias all-MiniLM-L6-v2, a local model directory, or a Hub id reachable from here."
        ) from None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise DataError(
            f"model.name={model.name!r} has no fast (Rust) tokenizer, which prep needs for "
            "batched tokenization. Use a model that ships tokenizer.json."
        )
    # A copy, so truncation and padding saved in tokenizer.json do not leak into our calls.
    return Tokenizer.from_str(backend.to_str())


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
    """Encode texts (or text pairs), truncated to `max_length` tokens."""
    full = Tokenizer.from_str(tokenizer.to_str())
    full.no_truncation()
    full.no_padding()
    inputs = texts if pairs is None else list(zip(texts, pairs))
    input_ids: list[list[int]] = []
    type_ids: list[list[int]] = []
    lengths = np.empty(len(inputs), dtype=np.int64)
    pieces = words = unknown = 0
    unk_id = _unknown_id(full)
    with tqdm(total=len(inputs), desc=desc, unit="rows", disable=None, leave=False) as bar:
        for start in range(0, len(inputs), CHUNK_ROWS):
            for offset, enc in enumerate(full.encode_batch(inputs[start : start + CHUNK_ROWS])):
                ids = enc.ids
                lengths[start + offset] = len(ids)
                pieces += len(ids) - sum(enc.special_tokens_mask)
                words += len({(s, w) for s, w in zip(enc.sequence_ids, enc.word_ids) if w is not None})
                if unk_id is not None:
                    unknown += ids.count(unk_id)
                input_ids.append(ids)
                type_ids.append(enc.type_ids)
            bar.update(min(CHUNK_ROWS, len(inputs) - start))
    _truncate(tokenizer, inputs, lengths, max_length, input_ids, type_ids)
    return Tokenized(
        input_ids=input_ids,
        token_type_ids=type_ids if pairs is not None else None,
        lengths=lengths,
        pieces=pieces,
        words=words,
        unknown=unknown,
    )


def _truncate(
    tokenizer: Tokenizer,
    inputs: list,
    lengths: np.ndarray,
    max_length: int,
    input_ids: list[list[int]],
    type_ids: list[list[int]],
) -> None:
    """Re-encode only the over-long rows with the tokenizer's own truncation, in place."""
    long_rows = np.flatnonzero(lengths > max_length).tolist()
    if not long_rows:
        return
    if max_length <= tokenizer.num_special_tokens_to_add(isinstance(inputs[0], tuple)):
        raise DataError(f"data.max_length={max_length} leaves no room for text after special tokens.")
    truncating = Tokenizer.from_str(tokenizer.to_str())
    truncating.no_padding()
    truncating.enable_truncation(max_length, strategy="longest_first")
    for row, enc in zip(long_rows, truncating.encode_batch([inputs[i] for i in long_rows])):
        input_ids[row] = enc.ids
        type_ids[row] = enc.type_ids


def _unknown_id(tokenizer: Tokenizer) -> int | None:
    # WordPiece and Unigram models name an unknown token; byte-level BPE has none (rate 0).
    unk = getattr(tokenizer.model, "unk_token", None)
    return tokenizer.token_to_id(unk) if unk else None
