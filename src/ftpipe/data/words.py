"""Tokenize tagged words: sub-word ids, each token's label and scored word, and windows.

Words go to the fast tokenizer already split (`is_pretokenized`), so its `word_ids` say which
word each sub-word came from. A word's tag goes on its first sub-word; its other sub-words get
-100 (or the tag too, with `label_all_subwords`), and so do special tokens. `word_ids` marks the
first sub-word of each word with the word's index and every other token with -1: those are the
positions evaluation scores.

A sentence longer than `max_length` is split into windows of at most `max_length` tokens, each
window starting `stride` sub-words before the previous one ends, so its first words have
context on their left. Each word is labelled and scored in the one window where its first
sub-word lies past the overlap, so every word counts once. With `stride=None` the sentence is
truncated instead, and the words cut off are counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding, Tokenizer
from tqdm.auto import tqdm

from ftpipe.data.tokenize import CHUNK_ROWS, Tokenized, unknown_id
from ftpipe.errors import DataError

IGNORED = -100
"""The label cross-entropy skips."""


@dataclass(frozen=True)
class WordRows:
    """One shard's tagged sentences as model rows (windows of a long sentence are rows).

    Attributes:
        tokens: The rows' token ids and the per-sentence counts stats.json needs.
        token_labels: Per row, each token's tag id or -100.
        word_ids: Per row, the word index on each word's first sub-word, -1 elsewhere.
        sentence_of: Per row, the index of its sentence in the shard.
    """

    tokens: Tokenized
    token_labels: list[list[int]]
    word_ids: list[list[int]]
    sentence_of: np.ndarray


def tokenize_words(
    tokenizer: Tokenizer,
    sentences: list[list[str]],
    tags: list[list[int]],
    max_length: int,
    stride: int | None,
    label_all_subwords: bool = False,
) -> WordRows:
    """Encode sentences of words and align their tags; see the module docstring.

    Args:
        tokenizer: An untruncated, unpadded tokenizer (`ftpipe.data.tokenize.load_tokenizer`).
        sentences: Each sentence's words.
        tags: Each sentence's tag ids, one per word.
        max_length: Longest row, special tokens included.
        stride: Sub-words a window shares with the one before; None truncates.
        label_all_subwords: Label every sub-word of a word, not only its first.

    Raises:
        DataError: If `max_length` leaves no room for words, or `stride` no room for new ones.
    """
    unk = unknown_id(tokenizer)
    rows = _Rows()
    lengths = np.empty(len(sentences), dtype=np.int64)
    pieces = unknown = 0
    with tqdm(total=len(sentences), desc="tokenize words", unit="rows", disable=None,
              leave=False) as bar:  # fmt: skip
        for start in range(0, len(sentences), CHUNK_ROWS):
            chunk = sentences[start : start + CHUNK_ROWS]
            for offset, enc in enumerate(tokenizer.encode_batch(chunk, is_pretokenized=True)):
                index = start + offset
                lengths[index] = len(enc.ids)
                content = [i for i, w in enumerate(enc.word_ids) if w is not None]
                pieces += len(content)
                unknown += sum(enc.ids[i] == unk for i in content) if unk is not None else 0
                window = _Window.of(enc, content, max_length, stride)
                rows.add_sentence(index, enc, content, tags[index], window, label_all_subwords)
            bar.update(len(chunk))
    tokens = Tokenized(
        input_ids=rows.input_ids,
        token_type_ids=None,
        second_starts=None,
        lengths=lengths,
        pieces=pieces,
        words=sum(map(len, sentences)),
        unknown=unknown,
        windows=len(rows.input_ids) - len(sentences),
        lost_words=rows.lost_words,
    )
    return WordRows(tokens, rows.labels, rows.word_ids, np.asarray(rows.sentence_of, np.int64))


@dataclass(frozen=True)
class _Window:
    """How one sentence's content tokens are cut: the room per window and the step."""

    prefix: list[int]
    suffix: list[int]
    room: int
    step: int | None
    """Content tokens from one window's start to the next's; None for one window only."""

    @classmethod
    def of(cls, enc: Encoding, content: list[int], max_length: int, stride: int | None):
        """The cut for an encoding whose content tokens are at positions `content`."""
        first, last = (content[0], content[-1]) if content else (len(enc.ids), len(enc.ids) - 1)
        prefix, suffix = enc.ids[:first], enc.ids[last + 1 :]
        room = max_length - len(prefix) - len(suffix)
        if room <= 0:
            raise DataError(
                f"data.max_length={max_length} leaves no room for words after the "
                f"{len(prefix) + len(suffix)} special tokens. Raise data.max_length."
            )
        if stride is not None and len(content) > room and stride >= room:
            raise DataError(
                f"data.stride={stride} leaves no room for new words in windows of {room} "
                f"sub-words (data.max_length={max_length} less special tokens). Lower "
                "data.stride below that, or raise data.max_length."
            )
        step = None if stride is None else room - stride
        return cls(prefix, suffix, room, step)

    def starts(self, length: int) -> list[int]:
        """The first content token of each window."""
        if self.step is None or length <= self.room:
            return [0]
        return list(range(0, length - self.room + self.step, self.step))


class _Rows:
    """Collects model rows as sentences are cut into windows."""

    def __init__(self) -> None:
        self.input_ids: list[list[int]] = []
        self.labels: list[list[int]] = []
        self.word_ids: list[list[int]] = []
        self.sentence_of: list[int] = []
        self.lost_words = 0

    def add_sentence(
        self,
        index: int,
        enc: Encoding,
        content: list[int],
        tags: list[int],
        window: _Window,
        all_subwords: bool,
    ) -> None:
        """Add one sentence's windows: each word labelled and scored in exactly one of them."""
        words = [enc.word_ids[i] for i in content]
        ids = [enc.ids[i] for i in content]
        starts = window.starts(len(content))
        for number, start in enumerate(starts):
            end = min(start + window.room, len(content))
            # Words whose first sub-word lies in [own, end) belong to this window; before `own`
            # is context the previous window already labelled.
            own = start if number == 0 else starts[number - 1] + window.room
            labels, scored = [], []
            for position in range(start, end):
                word = words[position]
                first = position == 0 or words[position - 1] != word
                first_at = position if first else _first_position(words, position)
                owned = own <= first_at < end
                labels.append(tags[word] if owned and (first or all_subwords) else IGNORED)
                scored.append(word if owned and first else -1)
            pad = [IGNORED] * len(window.prefix), [IGNORED] * len(window.suffix)
            self.input_ids.append(window.prefix + ids[start:end] + window.suffix)
            self.labels.append(pad[0] + labels + pad[1])
            self.word_ids.append([-1] * len(window.prefix) + scored + [-1] * len(window.suffix))
            self.sentence_of.append(index)
        if window.step is None and len(content) > window.room:
            self.lost_words += len(set(words[window.room :]) - set(words[: window.room]))


def _first_position(words: list[int | None], position: int) -> int:
    """The position of the first sub-word of the word at `position`."""
    while position > 0 and words[position - 1] == words[position]:
        position -= 1
    return position
