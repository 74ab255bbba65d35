"""Read a labelled table from CSV, TSV, JSONL, CoNLL, Parquet or a Hugging Face dataset.

Readers stream: an input is read in batches of at most `BATCH_ROWS` rows, so memory does not
grow with the file. Each batch keeps every row as written, with its line (or row) number, so
validation can name the exact place a problem is. Bytes that are not UTF-8 are kept as
surrogate escapes rather than failing the whole file, and a row that cannot be parsed is kept
with its parse error: both are reported per row, under the user's `data.on_error` policy. The
sha256 of an input's raw bytes (after decompression), which the data fingerprint is built
from, is computed as the bytes stream past.

A CoNLL file (a word and its tag per line, sentences separated by blank lines: .conll, .iob,
.bio, or .txt with `data.task: token-classification`) reads as one row per sentence, with
columns `tokens` and `tags`, numbered by the line of the sentence's first word.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import PurePosixPath
from typing import IO, Any

import fsspec

from ftpipe.config.schema import DataConfig
from ftpipe.data.parse import (
    BATCH_ROWS,
    Table,
    conll_batches,
    delimited_batches,
    jsonl_batches,
)
from ftpipe.data.validate import resolve_column
from ftpipe.errors import DataError, reason
from ftpipe.tasks.alpaca import PROMPT_COLUMN, prompts

HF_PREFIX = "hf:"
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
    ".conll": "conll",
    ".iob": "conll",
    ".bio": "conll",
}
"""Extension to format; .txt is CoNLL too, but only with `data.task: token-classification`."""
FORMAT_NAMES = {"csv": "CSV", "tsv": "TSV", "jsonl": "JSONL", "conll": "CoNLL"}
"""How messages name each text format."""
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
BINARY_PROBE = 8192
"""Bytes at the start of a text input (after decompression) checked for NUL bytes."""
DECOMPRESSION_ERRORS = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)
"""What decompressors raise for data cut short, corrupt, or not compressed at all."""
READ_ERRORS = (OSError, ValueError, *DECOMPRESSION_ERRORS)
"""What file systems and decompressors raise for a file they cannot read to its end."""


class Stream:
    """One input, read batch by batch; `digest` is set once a pass has read it to its end."""

    def __init__(self, source: str, config: DataConfig) -> None:
        self.source = source
        self.config = config
        self.digest = ""

    def batches(self) -> Iterator[Table]:
        """Yield the input's rows in batches, in file order; every call reads it again.

        Alpaca rows (`data.instruction_column`) also carry their rendered prompt, in the
        column `ftpipe.tasks.alpaca.PROMPT_COLUMN`.

        Raises:
            DataError: If the input is missing, unreadable, corrupt, binary, or of an unknown
                format.
        """
        if self.config.instruction_column is None:
            yield from self._read()
            return
        names: dict[str, None] = {}  # JSONL batches may differ in keys: resolve on them all
        for table in self._read():
            names.update(dict.fromkeys(table.columns))
            yield self._with_prompts(table, list(names))

    def _with_prompts(self, table: Table, names: list[str]) -> Table:
        """The table plus each row's Alpaca prompt, from its instruction and input cells."""
        data, rows = self.config, len(table)
        cells = []
        for wanted, key in ((data.instruction_column, "data.instruction_column"),
                            (data.input_column, "data.input_column")):  # fmt: skip
            name = resolve_column(self.source, names, wanted, key)
            cells.append(table.columns[name] if name in table.columns else [None] * rows)
        return replace(table, columns={**table.columns, PROMPT_COLUMN: prompts(*cells)})

    def _read(self) -> Iterator[Table]:
        """The input's rows as read, in batches (see `batches`)."""
        if self.source.startswith(HF_PREFIX):
            yield from self._hf_batches()
            return
        fmt = _format_of(self.source, self.config)
        if fmt == "parquet":
            self.digest = input_digest(self.source, self.config)
            yield from _parquet_batches(self.source)
            return
        with _open(self.source) as handle:
            hashing = _HashingReader(self.source, handle)
            head = hashing.head
            if head.startswith(UTF16_BOMS):
                raise DataError(f"{self.source} is UTF-16 encoded. Re-save it as UTF-8.")
            check_not_binary(self.source, head, fmt)
            text = io.TextIOWrapper(
                io.BufferedReader(hashing, 1 << 20),
                encoding="utf-8-sig",
                errors="surrogateescape",
                newline="",  # no translation: the parsers split lines as the formats say
            )
            if fmt == "jsonl":
                yield from jsonl_batches(self.source, text)
            elif fmt == "conll":
                yield from conll_batches(self.source, text, self.config.tag_column)
            else:
                yield from delimited_batches(self.source, text, fmt, self.config.has_header)
            text.read()  # to the end, so the digest covers every byte
            self.digest = hashing.hexdigest()

    def _hf_batches(self) -> Iterator[Table]:
        dataset = _load_hf(self.source, self.config)
        import datasets

        self.digest = dataset._fingerprint  # a Hub dataset has no single file to hash
        for start in range(0, dataset.num_rows, BATCH_ROWS):
            rows = dataset[start : start + BATCH_ROWS]
            columns: dict[str, list[Any]] = {}
            for column in dataset.column_names:
                values, feature = rows[column], dataset.features[column]
                # ClassLabel columns store ids; keep the names so the label map reads naturally.
                if isinstance(feature, datasets.ClassLabel):
                    values = [
                        feature.int2str(v) if v is not None and v >= 0 else None for v in values
                    ]
                columns[column] = list(values)
            n = len(next(iter(columns.values()), []))
            numbers = list(range(start + 1, start + n + 1))
            yield Table(self.source, columns, numbers, [None] * n, "", "row", start)


def no_rows(source: str) -> DataError:
    """The error for an input without data rows."""
    return DataError(f"{source} has no data rows. Add rows, or point the config at another file.")


def input_digest(source: str, config: DataConfig) -> str:
    """sha256 of an input's raw bytes (after decompression), read in blocks without parsing.

    For `hf:` inputs, the dataset's own fingerprint.
    """
    if source.startswith(HF_PREFIX):
        return _load_hf(source, config)._fingerprint
    digest = hashlib.sha256()
    with _open(source) as handle:
        try:
            while block := handle.read(1 << 20):
                digest.update(block)
        except READ_ERRORS as exc:
            raise unreadable(source, exc) from None
    return digest.hexdigest()


def _format_of(source: str, config: DataConfig) -> str:
    if config.format != "auto":
        return config.format
    tokens = config.task == "token-classification"
    for suffix in reversed(PurePosixPath(source.split("?")[0]).suffixes):
        if suffix.lower() in FORMATS:
            return FORMATS[suffix.lower()]
        if suffix.lower() == ".txt" and tokens:
            return "conll"
    raise DataError(
        f"Cannot tell the format of {source} from its extension. Name it .csv, .tsv, .jsonl, "
        ".parquet or .conll (.txt is CoNLL with data.task=token-classification), or set "
        "data.format to one of csv, tsv, jsonl, parquet, conll."
    )


@contextmanager
def _open(source: str) -> Iterator[IO[bytes]]:
    """Open an input for binary reading, turning every failure to open it into a DataError."""
    # fsspec handles local paths and file://, s3://, gs://, ... alike; compression is inferred
    # from the extension (.csv.gz).
    try:
        opened = fsspec.open(source, "rb", compression="infer")
        handle = opened.__enter__()
    except FileNotFoundError:
        raise DataError(
            f"Input {source} does not exist. Check data.train / data.eval (relative paths are "
            "resolved from the current directory)."
        ) from None
    except ImportError as exc:
        raise DataError(
            f"Cannot open {source}: {reason(exc)}. Install the fsspec backend for that URI scheme "
            "(s3fs for s3://, gcsfs for gs://)."
        ) from None
    except READ_ERRORS as exc:
        raise unreadable(source, exc) from None
    try:
        yield handle
    finally:
        with suppress(*READ_ERRORS):  # closing a stream whose read failed may fail again
            opened.__exit__(None, None, None)


class _HashingReader(io.RawIOBase):
    """A raw stream over an open input that hashes what it reads and names read failures."""

    def __init__(self, source: str, handle: IO[bytes]) -> None:
        self.source = source
        self.handle = handle
        self.sha256 = hashlib.sha256()
        chunks, size = [], 0
        while size < BINARY_PROBE and (chunk := self._read(BINARY_PROBE - size)):
            chunks.append(chunk)
            size += len(chunk)
        self.head = b"".join(chunks)
        self._pending = self.head

    def _read(self, size: int) -> bytes:
        try:
            data = self.handle.read(size)
        except READ_ERRORS as exc:
            raise unreadable(self.source, exc) from None
        self.sha256.update(data)
        return data

    def readable(self) -> bool:
        """Always: this stream is for reading."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` with the next bytes; return how many (0 at the end)."""
        if self._pending:
            data, self._pending = self._pending[: len(buffer)], self._pending[len(buffer) :]
        else:
            data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def hexdigest(self) -> str:
        """sha256 of the bytes read so far."""
        return self.sha256.hexdigest()


def unreadable(
    source: str, exc: BaseException, named_by: str = "data.train / data.eval"
) -> DataError:
    """The one-paragraph error for an input that fails while being opened or read.

    Prep's readers and `ftpipe predict` both word their read failures here.

    Args:
        source: The input as the user named it.
        exc: What the file system or decompressor raised.
        named_by: The config keys or option that name the input, for the fix.
    """
    why = reason(exc)
    if isinstance(exc, EOFError):
        return DataError(
            f"{source} is truncated: it ends before the end of its compressed data ({why}). The "
            "file was probably cut short by an interrupted download or copy; fetch or copy it "
            f"again, or decompress it and point {named_by} at the result."
        )
    if isinstance(exc, gzip.BadGzipFile) or "not a gzipped file" in why.lower():
        return DataError(
            f"{source} is not gzip-compressed, though its name ends in .gz ({why}). Rename it "
            "without .gz if it is plain text, or compress it with gzip."
        )
    if isinstance(exc, (zlib.error, lzma.LZMAError)) or "compress" in why.lower():
        return DataError(
            f"{source} is corrupt: its compressed data cannot be decoded ({why}). Fetch or copy "
            "the file again, or re-compress it from the original."
        )
    return DataError(
        f"Cannot read {source}: {why}. Check that the file exists, is readable and is not being "
        "written to, then run prep again."
    )


def check_not_binary(source: str, head: bytes, fmt: str) -> None:
    """Refuse a text input whose first block holds NUL bytes: it is binary, not text.

    Raises:
        DataError: If `head` (the first bytes after decompression) holds a NUL byte.
    """
    if b"\x00" in head:
        name = FORMAT_NAMES.get(fmt, fmt.upper())
        raise DataError(
            f"{source} looks binary, not {name} text: its first {len(head):,} bytes hold "
            "NUL bytes, which CSV, TSV, JSONL and CoNLL files never contain. Check that "
            "data.train / data.eval name the right file and that data.format (read as "
            f"{fmt}) matches it; UTF-16 text must be re-saved as UTF-8."
        )


def _parquet_batches(source: str) -> Iterator[Table]:
    import pyarrow.parquet as pq

    start = 0
    with _open(source) as handle:
        try:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                values = batch.to_pydict()
                columns = {name: [_decode(v) for v in values[name]] for name in names}
                numbers = list(range(start + 1, start + batch.num_rows + 1))
                yield Table(source, columns, numbers, [None] * batch.num_rows, "", "row", start)
                start += batch.num_rows
        except DataError:
            raise
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise DataError(
                f"{source} is not a readable Parquet file; it is corrupt or truncated "
                f"({reason(exc)}). Re-export it from the original data, or set data.format if "
                "it is of another kind."
            ) from None
    if start == 0:
        yield Table(source, {name: [] for name in names}, [], [], "", "row", 0)


def _decode(value: Any) -> Any:
    return value.decode("utf-8", errors="surrogateescape") if isinstance(value, bytes) else value


def _load_hf(source: str, config: DataConfig) -> Any:
    """Load `hf:NAME:SPLIT` (NAME may be a Hub id or a local dataset directory)."""
    name, _, split = source[len(HF_PREFIX) :].rpartition(":")
    if not name or not split:
        raise DataError(
            f"{source} does not name a split. Write hf:NAME:SPLIT, for example "
            "hf:nyu-mll/glue:train with data.hf_config=sst2."
        )
    import datasets

    try:
        return datasets.load_dataset(name, config.hf_config, split=split)
    except Exception as exc:  # the Hub client raises many types; all mean "cannot load"
        raise DataError(
            f"Cannot load Hugging Face dataset {name!r} (config {config.hf_config!r}, split "
            f"{split!r}): {reason(exc)}. Check the name, data.hf_config and the split; "
            "offline, point data.train at a local file instead."
        ) from None


def word_per_line(source: str, config: DataConfig) -> bool:
    """Whether an input is a CoNLL file (one word per line), so a word's problem names its line.

    False for `hf:` datasets and for inputs whose format cannot be told (reading them says why).
    """
    if source.startswith(HF_PREFIX):
        return False
    try:
        return _format_of(source, config) == "conll"
    except DataError:
        return False
