"""Parse CSV, TSV, JSONL and CoNLL text into batches of rows (`Table`s), as written.

Every row keeps its line number, and a row that cannot be parsed keeps its parse error, so
validation can name the exact place of each problem.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import IO, Any

from ftpipe.errors import DataError, reason

BATCH_ROWS = 20_000
"""Rows per batch a reader yields: memory per batch, not per file."""
BLOCK_CHARS = 1 << 20
"""Characters read from a text stream at a time."""
DOCSTART = "-DOCSTART-"
"""First field of a CoNLL document separator line, which is skipped and ends a sentence."""
ASCII_BLANKS = " \t\r\f\v"
"""What separates the fields of a CoNLL line."""
_ASCII_BLANK_RUNS = re.compile(f"[{ASCII_BLANKS}]+")

# Python's csv module refuses fields over 128 KiB by default; raise that so oversize rows reach
# validation, where data.max_chars and the drop policy decide.
csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class Table:
    """Rows of one input (or of one batch of it), as read, before validation.

    Attributes:
        source: The path or URI as the user wrote it.
        columns: Column name to its values; without a header, names are "0", "1", ...
        numbers: Per row, its line number (text files) or 1-based row number (otherwise).
        errors: Per row, why it could not be parsed (extra fields, invalid JSON), or None.
        digest: sha256 of the raw bytes (or the dataset's own fingerprint for `hf:`); empty
            for a batch, whose input has not been read to its end yet.
        unit: "line" for text files, "row" otherwise.
        start: Position of this table's first row among all rows of the input.
    """

    source: str
    columns: dict[str, list[Any]]
    numbers: list[int]
    errors: list[str | None]
    digest: str = ""
    unit: str = "line"
    start: int = 0

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def locations(self) -> list[str]:
        """Per row, where it is: "line 12" for text files, "row 12" otherwise."""
        return [f"{self.unit} {n}" for n in self.numbers]


def text_blocks(text: IO[str]) -> Iterator[str]:
    r"""A text stream in blocks of about `BLOCK_CHARS`, each ending just after a newline.

    Only the last block may end otherwise. Cutting after "\n" never splits a "\r\n" pair, so
    lines split the same within blocks as in the whole text.
    """
    rest = ""
    while block := text.read(BLOCK_CHARS):
        block = rest + block
        cut = block.rfind("\n") + 1
        rest = block[cut:]
        if cut:
            yield block[:cut]
    if rest:
        yield rest


def _lines(text: IO[str]) -> Iterator[str]:
    # Split on "\n" only: JSON strings may hold U+2028 and friends, which splitlines() breaks.
    # A "\r" of a CRLF ending stays at the end of its line.
    for block in text_blocks(text):
        yield from block.removesuffix("\n").split("\n")


def delimited_batches(source: str, text: IO[str], fmt: str, has_header: bool) -> Iterator[Table]:
    """Batches of a CSV (RFC 4180 quoting) or TSV (literal) text stream, header checked.

    Raises:
        DataError: On a repeated header name or a quoting error, naming the line.
    """
    # TSV is read literally (no quoting), as GLUE and most TSV exports write it; CSV follows
    # RFC 4180 quoting, so a quoted field may span lines and the reported line is its last one.
    # Lines come from whole blocks of text: much faster than a line at a time from the stream.
    lines = chain.from_iterable(io.StringIO(block, newline="") for block in text_blocks(text))
    if fmt == "tsv":
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines, strict=True)
    names: list[str] | None = None
    records: list[list[str]] = []
    lines: list[int] = []
    start = 0
    try:
        for record in reader:
            if not record:
                continue
            if names is None and has_header:
                names = _checked_header(source, record)
                continue
            records.append(record)
            lines.append(reader.line_num)
            if len(records) == BATCH_ROWS:
                yield _delimited_table(source, records, lines, names, start)
                start += len(records)
                records, lines = [], []
    except csv.Error as exc:
        raise DataError(
            f"{source} line {reader.line_num} is not valid {fmt.upper()}: {reason(exc)}. Fix the "
            "quoting on that line (an unclosed quote makes the error appear further down), or set "
            "data.format if the file is of another kind."
        ) from None
    if records or start == 0:
        yield _delimited_table(source, records, lines, names, start)


def _delimited_table(
    source: str, records: list[list[str]], lines: list[int], header: list[str] | None, start: int
) -> Table:
    # Without a header, a batch has as many columns as its widest row; validation reads a
    # column a batch lacks as missing values.
    names = header or [str(i) for i in range(max((len(r) for r in records), default=0))]
    width = len(names)
    errors: list[str | None] = [None] * len(records)
    if any(len(r) != width for r in records):
        # Short rows get None for the missing fields; validation names them.
        errors = [
            f"{len(r) - width} more field(s) than the header" if len(r) > width else None
            for r in records
        ]
        records = [r[:width] + [None] * (width - len(r)) for r in records]
    # Transposing with zip runs in C: the common case, every row as wide as the header.
    values = zip(*records, strict=True) if records else ([] for _ in names)
    columns: dict[str, list[Any]] = {n: list(v) for n, v in zip(names, values, strict=True)}
    return Table(source, columns, lines, errors, start=start)


def _checked_header(source: str, names: list[str]) -> list[str]:
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        listed = ", ".join(repr(name) for name in repeated)
        raise DataError(
            f"{source} line 1 (the header) repeats the column name(s) {listed}. Give every "
            "column a distinct name, or set data.has_header=false and use column indexes."
        )
    return names


def jsonl_batches(source: str, text: IO[str]) -> Iterator[Table]:
    """Batches of a JSONL text stream; a line that is not a JSON object keeps its error."""
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    errors: list[str | None] = []
    start = 0
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            error = None if isinstance(value, dict) else "it is not a JSON object"
        except json.JSONDecodeError as exc:
            value, error = {}, f"it is not valid JSON ({exc.msg})"
        rows.append(value if error is None else {})
        errors.append(error)
        numbers.append(number)
        if len(rows) == BATCH_ROWS:
            yield _jsonl_table(source, rows, numbers, errors, start)
            start += len(rows)
            rows, numbers, errors = [], [], []
    if rows or start == 0:
        yield _jsonl_table(source, rows, numbers, errors, start)


def _jsonl_table(
    source: str, rows: list[dict], numbers: list[int], errors: list[str | None], start: int
) -> Table:
    names = list(dict.fromkeys(key for row in rows for key in row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    return Table(source, columns, numbers, errors, start=start)


def conll_batches(source: str, text: IO[str], tag_column: int | None) -> Iterator[Table]:
    """Batches of a CoNLL text stream: one row per sentence, with columns "tokens" and "tags".

    Each line holds a word (field 0) and its tag, fields separated by tabs or runs of spaces. A
    blank (or whitespace-only) line ends a sentence, and so does a `-DOCSTART-` line, which is
    skipped. A row's number is the line of its sentence's first word. A line too short to hold
    the tag does not raise: its sentence keeps an error naming that line, and the words and
    tags that were read.

    Args:
        source: The input as the user named it.
        text: The text stream, read without newline translation (CRLF endings are fine).
        tag_column: The 0-based field holding the tag (the word is field 0); None for the
            last field, as in `word POS chunk tag` lines.
    """
    need = 2 if tag_column is None else tag_column + 1
    tag = -1 if tag_column is None else tag_column
    sentences: list[list[str]] = []
    labels: list[list[str]] = []
    numbers: list[int] = []
    errors: list[str | None] = []
    words: list[str] = []
    tags: list[str] = []
    error: str | None = None
    start = 0
    # A blank line after the last one ends a last sentence that has no blank line after it.
    for number, line in enumerate(chain(_lines(text), [""]), start=1):
        fields = line.split() if line.isascii() else _conll_fields(line)
        if fields and fields[0] != DOCSTART:
            if not words:
                numbers.append(number)
            words.append(fields[0])
            if len(fields) >= need:
                tags.append(fields[tag])
            elif error is None:
                error = _short_line(number, len(fields), tag_column)
            continue
        if not words:
            continue
        sentences.append(words)
        labels.append(tags)
        errors.append(error)
        words, tags, error = [], [], None
        if len(sentences) == BATCH_ROWS:
            yield Table(source, {"tokens": sentences, "tags": labels}, numbers, errors, start=start)
            start += len(sentences)
            sentences, labels, numbers, errors = [], [], [], []
    if sentences or start == 0:
        yield Table(source, {"tokens": sentences, "tags": labels}, numbers, errors, start=start)


def _conll_fields(line: str) -> list[str]:
    """The fields of a line that is not all ASCII, split on ASCII blanks only.

    A word may hold a no-break or ideographic space, which `str.split()` would cut it at.
    """
    if not line.strip():
        return []  # whitespace only, of any kind: a blank line
    return _ASCII_BLANK_RUNS.split(line.strip(ASCII_BLANKS))


def _short_line(number: int, fields: int, tag_column: int | None) -> str:
    if tag_column is None:
        return (
            f"line {number} has {fields} field(s): a word without its tag, which is the last "
            "field (set data.tag_column if the tags are elsewhere)"
        )
    return (
        f"line {number} has {fields} field(s), but the tag is field {tag_column} "
        "(data.tag_column, 0-based, the word being field 0)"
    )
