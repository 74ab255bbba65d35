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

from ftpipe.data.scan import Index
from ftpipe.data.sources import Stream
from ftpipe.data.tokenize import TokenCounts, tokenize
from ftpipe.data.validate import text_value
from ftpipe.errors import DataError
from ftpipe.tasks import Task


class ShardWriter:
    """Collects one split's rows and writes them as numbered Parquet shards."""

    def __init__(
        self,
        directory: Path,
        tokenizer: Tokenizer,
        task: Task,
        max_length: int,
        shard_rows: int,
        pairs: bool,
    ) -> None:
        directory.mkdir(parents=True)
        self.directory, self.tokenizer, self.task = directory, tokenizer, task
        self.max_length, self.shard_rows = max_length, shard_rows
        self.texts: list[str] = []
        self.pairs: list[str] | None = [] if pairs else None
        self.labels: list[int] = []
        self.locations: list[str] = []
        self.shards = 0
        self.counts = TokenCounts()

    def add(
        self,
        texts: list[str],
        pairs: list[str] | None,
        labels: Sequence[int],
        locations: list[str],
    ) -> None:
        """Append rows; write every shard that fills up."""
        self.texts += texts
        if self.pairs is not None and pairs is not None:
            self.pairs += pairs
        self.labels += labels
        self.locations += locations
        while len(self.texts) >= self.shard_rows:
            self._write(self.shard_rows)

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
        tokens = tokenize(
            self.tokenizer, texts, pairs, self.max_length, desc=f"tokenize {self.directory.name}"
        )
        self.counts.add(tokens)
        columns: dict[str, pa.Array] = {"text": pa.array(texts, pa.string())}
        if pairs is not None:
            columns["text_pair"] = pa.array(pairs, pa.string())
        columns["label"] = pa.array(labels, pa.int32())
        columns["input_ids"] = pa.array(tokens.input_ids, pa.list_(pa.int32()))
        columns |= self.task.prep_columns(tokens)
        columns["location"] = pa.array(locations, pa.string())
        path = self.directory / f"part-{self.shards:05d}.parquet"
        pq.write_table(pa.table(columns), path, compression="zstd")
        self.shards += 1


def write_rows(
    stream: Stream, splits: dict[str, tuple[Index, np.ndarray]], writers: dict[str, ShardWriter]
) -> None:
    """Read an input again and hand each kept row, in order, to its split's writer.

    Args:
        stream: The input the splits' rows come from.
        splits: Split name to its rows (an index into this input) and their label-map ids.
        writers: Split name to its writer.

    Raises:
        DataError: If the input changed since prep first read it.
    """
    digest = stream.digest
    for table in stream.batches():
        end = table.start + len(table)
        for name, (index, label_ids) in splits.items():
            lo, hi = np.searchsorted(index.positions, [table.start, end])
            if lo == hi:
                continue
            rows = (index.positions[lo:hi] - table.start).tolist()
            texts = table.columns[index.text_column]
            pairs = None
            if index.pair_column is not None:
                column = table.columns[index.pair_column]
                pairs = [text_value(column[i]) for i in rows]
            writers[name].add(
                [text_value(texts[i]) for i in rows],
                pairs,
                label_ids[lo:hi].tolist(),
                [f"{index.unit} {n}" for n in index.numbers[lo:hi].tolist()],
            )
    if stream.digest != digest:
        raise DataError(
            f"{stream.source} changed while prep was reading it (its bytes differ between the "
            "two passes prep makes). Run prep again once nothing writes to the file."
        )
