"""Pass 2 of prep: read the inputs again and write each kept row to its split's shards.

Rows reach each split in input order. A shard is tokenized and written as soon as it holds
`data.shard_rows` rows, so memory holds about one shard per split, never the whole data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from ftpipe.config.schema import DataConfig
from ftpipe.data.chats import ChatRenderer, tokenize_chats
from ftpipe.data.completions import tokenize_completions
from ftpipe.data.scan import Index
from ftpipe.data.sources import Stream
from ftpipe.data.tokenize import TokenCounts, Tokenized, tokenize
from ftpipe.data.words import tokenize_words
from ftpipe.errors import DataError
from ftpipe.tasks import LabelMap, Task, text_value


class ShardWriter:
    """Collects one split's rows and writes them as numbered Parquet shards."""

    def __init__(
        self,
        directory: Path,
        tokenizer: Tokenizer,
        task: Task,
        labels: LabelMap,
        config: DataConfig,
        pairs: bool,
        eos_id: int | None = None,
        chats: ChatRenderer | None = None,
    ) -> None:
        directory.mkdir(parents=True)
        self.eos_id = eos_id  # what ends a completion (`Task.ends_completions`)
        self.chats = chats  # renders conversations (`data.messages_column`)
        self.directory, self.tokenizer, self.task = directory, tokenizer, task
        self.label2id, self.config = labels.label2id, config
        self.texts: list[str] = []
        self.pairs: list[str] | None = [] if pairs else None
        self.labels: list[str] = []
        self.locations: list[str] = []
        self.shards = 0
        self.sentences = 0
        self.counts = TokenCounts()

    def add(
        self,
        texts: list[str],
        pairs: list[str] | None,
        labels: Sequence[str],
        locations: list[str],
    ) -> None:
        """Append rows (labels by name); write every shard that fills up."""
        self.texts += texts
        if self.pairs is not None and pairs is not None:
            self.pairs += pairs
        self.labels += labels
        self.locations += locations
        while len(self.texts) >= self.config.shard_rows:
            self._write(self.config.shard_rows)

    def close(self) -> TokenCounts:
        """Write the last shard (an empty one for an empty split); return the token counts."""
        if self.texts or not self.shards:
            self._write(len(self.texts))
        return self.counts

    def _write(self, rows: int) -> None:
        texts, self.texts = self.texts[:rows], self.texts[rows:]
        pairs = None
        if self.pairs is not None:
            pairs, self.pairs = self.pairs[:rows], self.pairs[rows:]
        labels, self.labels = self.labels[:rows], self.labels[rows:]
        locations, self.locations = self.locations[:rows], self.locations[rows:]
        if self.task.pretokenized:
            columns = self._word_columns(texts, labels, locations)
        else:
            columns = self._row_columns(texts, pairs, labels, locations)
        path = self.directory / f"part-{self.shards:05d}.parquet"
        pq.write_table(pa.table(columns), path, compression="zstd")
        self.shards += 1

    def _row_columns(
        self, texts: list[str], pairs: list[str] | None, labels: list[str], locations: list[str]
    ) -> dict[str, pa.Array]:
        """One model row per input row: its text(s), label id, token ids and task columns."""
        tokens = encode_rows(
            self.tokenizer, self.task, self.config.max_length, texts, pairs, self.eos_id,
            self.chats, f"tokenize {self.directory.name}", self.config.train_on == "all",
        )  # fmt: skip
        self.counts.add(tokens)
        columns: dict[str, pa.Array] = {"text": pa.array(texts, pa.string())}
        if pairs is not None:
            columns["text_pair"] = pa.array(pairs, pa.string())
        columns["label"] = pa.array([self.label2id[name] for name in labels], pa.int32())
        columns["input_ids"] = pa.array(tokens.input_ids, pa.list_(pa.int32()))
        columns |= self.task.prep_columns(tokens)
        columns["location"] = pa.array(locations, pa.string())
        return columns

    def _word_columns(
        self, texts: list[str], labels: list[str], locations: list[str]
    ) -> dict[str, pa.Array]:
        """Tagged words: one model row per window of a sentence (`ftpipe.data.words`).

        `sentence` numbers the split's sentences, so evaluation scores each word once.
        """
        data = self.config
        tags = [[self.label2id[tag] for tag in name.split(" ")] for name in labels]
        rows = tokenize_words(
            self.tokenizer, [text.split(" ") for text in texts], tags, data.max_length,
            data.stride, data.label_all_subwords,
        )  # fmt: skip
        self.counts.add(rows.tokens)
        of = rows.sentence_of
        columns = {
            "text": pa.array([texts[i] for i in of], pa.string()),
            "tags": pa.array([labels[i] for i in of], pa.string()),
            "label": pa.array(np.full(len(of), -1), pa.int32()),
            "input_ids": pa.array(rows.tokens.input_ids, pa.list_(pa.int32())),
            "token_labels": pa.array(rows.token_labels, pa.list_(pa.int32())),
            "word_ids": pa.array(rows.word_ids, pa.list_(pa.int32())),
            "sentence": pa.array(of + self.sentences, pa.int32()),
            "location": pa.array([locations[i] for i in of], pa.string()),
        }
        self.sentences += len(texts)
        return columns


def encode_rows(
    tokenizer: Tokenizer,
    task: Task,
    max_length: int,
    texts: list[str],
    pairs: list[str] | None,
    eos_id: int | None = None,
    chats: ChatRenderer | None = None,
    desc: str = "tokenize",
    train_prompt: bool = False,
) -> Tokenized:
    """Token ids (and the task's per-row token columns) of rows, as prep writes them.

    Evaluate re-tokenizes a causal LM's held-out rows with this, so a held-out loss is over
    exactly the tokens and targets training saw.

    Args:
        tokenizer: An untruncated, unpadded tokenizer (`ftpipe.data.tokenize.load_tokenizer`).
        task: The task (a completion is tokenized apart from its prompt and ended with EOS).
        max_length: Longest row, special tokens included.
        texts: Texts, prompts, or canonical conversations (with `chats`).
        pairs: Second texts (a pair's, or completions), or None.
        eos_id: What ends a completion, for tasks that end them.
        chats: The renderer of conversations, when rows are conversations.
        desc: Progress-bar label.
        train_prompt: Train on a completion's prompt too (`data.train_on: all`).
    """
    if chats is not None:
        return tokenize_chats(chats, texts, max_length)
    if pairs is not None and task.ends_completions:
        assert eos_id is not None
        return tokenize_completions(tokenizer, texts, pairs, max_length, eos_id, desc, train_prompt)
    return tokenize(tokenizer, texts, pairs, max_length, desc)


def write_rows(stream: Stream, splits: dict[str, Index], writers: dict[str, ShardWriter]) -> None:
    """Read an input again and hand each kept row, in order, to its split's writer.

    Args:
        stream: The input the splits' rows come from.
        splits: Split name to its rows (an index into this input).
        writers: Split name to its writer.

    Raises:
        DataError: If the input changed since prep first read it.
    """
    digest = stream.digest
    for table in stream.batches():
        end = table.start + len(table)
        for name, index in splits.items():
            lo, hi = np.searchsorted(index.positions, [table.start, end])
            if lo == hi:
                continue
            rows = (index.positions[lo:hi] - table.start).tolist()
            texts = table.columns[index.text_column]
            pairs = None
            if index.pair_column is not None:
                column = table.columns[index.pair_column]
                pairs = [text_value(column[i]) for i in rows]
            task = writers[name].task
            writers[name].add(
                [task.text_of(texts[i]) for i in rows],
                pairs,
                [index.label_names[i] for i in index.labels[lo:hi].tolist()],
                [f"{index.unit} {n}" for n in index.numbers[lo:hi].tolist()],
            )
    if stream.digest != digest:
        raise DataError(
            f"{stream.source} changed while prep was reading it (its bytes differ between the "
            "two passes prep makes). Run prep again once nothing writes to the file."
        )
