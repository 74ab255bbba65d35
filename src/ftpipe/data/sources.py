"""Read a labelled table from CSV, TSV, JSONL, Parquet or a Hugging Face dataset.

Readers keep every row as written, with its line (or row) number, so validation can name the
exact place a problem is. Bytes that are not UTF-8 are kept as surrogate escapes rather than
failing the whole file, and a row that cannot be parsed is kept with its parse error: both
are reported per row, under the user's `data.on_error` policy. Each table carries the sha256
of its raw bytes, which the data fingerprint is built from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import fsspec

from ftpipe.config.schema import DataConfig
from ftpipe.errors import DataError, reason

HF_PREFIX = "hf:"
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

# Python's csv module refuses fields over 128 KiB by default; raise that so oversize rows reach
# validation, where data.max_chars and the drop policy decide.
csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class Table:
    """Rows of one input, as read, before validation.

    Attributes:
        source: The path or URI as the user wrote it.
        columns: Column name to its values; without a header, names are "0", "1", ...
        locations: Per row, where it is: "line 12" for text files, "row 12" otherwise.
        errors: Per row, why it could not be parsed (extra fields, invalid JSON), or None.
        digest: sha256 of the raw bytes (or the dataset's own fingerprint for `hf:`).
    """

    source: str
    columns: dict[str, list[Any]]
    locations: list[str]
    errors: list[str | None]
    digest: str

    def __len__(self) -> int:
        return len(self.locations)


def read_table(source: str, config: DataConfig) -> Table:
    """Read one input named by `data.train` or `data.eval`.

    Raises:
        DataError: If the input is missing, unreadable, empty, or of an unknown format.
    """
    read = _read_hf if source.startswith(HF_PREFIX) else _read_file
    table = read(source, config)
    if not len(table):
        raise DataError(
            f"{source} has no data rows. Add rows, or point the config at another file."
        )
    return table


def _read_file(source: str, config: DataConfig) -> Table:
    fmt = _format_of(source, config)
    raw = _read_bytes(source)
    digest = hashlib.sha256(raw).hexdigest()
    if fmt == "parquet":
        return _read_parquet(source, raw, digest)
    if raw.startswith(UTF16_BOMS):
        raise DataError(f"{source} is UTF-16 encoded. Re-save it as UTF-8.")
    text = raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    if fmt == "jsonl":
        return _read_jsonl(source, text, digest)
    return _read_delimited(source, text, digest, fmt, config.has_header)


def _format_of(source: str, config: DataConfig) -> str:
    if config.format != "auto":
        return config.format
    for suffix in reversed(PurePosixPath(source.split("?")[0]).suffixes):
        if suffix.lower() in FORMATS:
            return FORMATS[suffix.lower()]
    raise DataError(
        f"Cannot tell the format of {source} from its extension. Name it .csv, .tsv, .jsonl or "
        ".parquet, or set data.format to one of csv, tsv, jsonl, parquet."
    )


def _read_bytes(source: str) -> bytes:
    # fsspec handles local paths and file://, s3://, gs://, ... alike; compression is inferred
    # from the extension (.csv.gz).
    try:
        with fsspec.open(source, "rb", compression="infer") as handle:
            return handle.read()
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
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {source}: {reason(exc)}.") from None


def _read_delimited(source: str, text: str, digest: str, fmt: str, has_header: bool) -> Table:
    # TSV is read literally (no quoting), as GLUE and most TSV exports write it; CSV follows
    # RFC 4180 quoting, so a quoted field may span lines and the reported line is its last one.
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[list[str]] = []
    lines: list[int] = []
    try:
        for record in reader:
            if record:
                records.append(record)
                lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(
            f"{source} line {reader.line_num} is not valid {fmt.upper()}: {reason(exc)}. Fix the "
            "quoting on that line (an unclosed quote makes the error appear further down), or set "
            "data.format if the file is of another kind."
        ) from None
    if has_header and records:
        names = _checked_header(source, records.pop(0))
        lines.pop(0)
    else:
        names = [str(i) for i in range(max((len(r) for r in records), default=0))]
    width = len(names)
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for record in records:
        # Short rows get None for the missing fields; validation names them.
        padded = record + [None] * (width - len(record))
        for name, value in zip(names, padded, strict=False):
            columns[name].append(value)
    errors = [
        f"{len(r) - width} more field(s) than the header" if len(r) > width else None
        for r in records
    ]
    return Table(source, columns, [f"line {n}" for n in lines], errors, digest)


def _checked_header(source: str, names: list[str]) -> list[str]:
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        listed = ", ".join(repr(name) for name in repeated)
        raise DataError(
            f"{source} line 1 (the header) repeats the column name(s) {listed}. Give every "
            "column a distinct name, or set data.has_header=false and use column indexes."
        )
    return names


def _read_jsonl(source: str, text: str, digest: str) -> Table:
    rows: list[dict[str, Any]] = []
    locations: list[str] = []
    errors: list[str | None] = []
    # Split on newlines only: JSON strings may hold U+2028 and friends, which splitlines() breaks.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            error = None if isinstance(value, dict) else "it is not a JSON object"
        except json.JSONDecodeError as exc:
            value, error = {}, f"it is not valid JSON ({exc.msg})"
        rows.append(value if error is None else {})
        errors.append(error)
        locations.append(f"line {number}")
    names = list(dict.fromkeys(key for row in rows for key in row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    return Table(source, columns, locations, errors, digest)


def _read_parquet(source: str, raw: bytes, digest: str) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{source} is not a readable Parquet file: {reason(exc)}.") from None
    columns = {name: [_decode(v) for v in values] for name, values in table.to_pydict().items()}
    locations = [f"row {i}" for i in range(1, table.num_rows + 1)]
    return Table(source, columns, locations, [None] * table.num_rows, digest)


def _decode(value: Any) -> Any:
    return value.decode("utf-8", errors="surrogateescape") if isinstance(value, bytes) else value


def _read_hf(source: str, config: DataConfig) -> Table:
    """Load `hf:NAME:SPLIT` (NAME may be a Hub id or a local dataset directory)."""
    name, _, split = source[len(HF_PREFIX) :].rpartition(":")
    if not name or not split:
        raise DataError(
            f"{source} does not name a split. Write hf:NAME:SPLIT, for example "
            "hf:nyu-mll/glue:train with data.hf_config=sst2."
        )
    import datasets

    try:
        dataset = datasets.load_dataset(name, config.hf_config, split=split)
    except Exception as exc:  # the Hub client raises many types; all mean "cannot load"
        raise DataError(
            f"Cannot load Hugging Face dataset {name!r} (config {config.hf_config!r}, split "
            f"{split!r}): {reason(exc)}. Check the name, data.hf_config and the split; "
            "offline, point data.train at a local file instead."
        ) from None
    columns: dict[str, list[Any]] = {}
    for column in dataset.column_names:
        values = dataset[column]
        feature = dataset.features[column]
        # ClassLabel columns store ids; keep the names so the label map reads naturally.
        if isinstance(feature, datasets.ClassLabel):
            values = [feature.int2str(v) if v is not None and v >= 0 else None for v in values]
        columns[column] = list(values)
    locations = [f"row {i}" for i in range(1, dataset.num_rows + 1)]
    # A Hub dataset has no single file to hash; its own fingerprint identifies its content.
    return Table(source, columns, locations, [None] * dataset.num_rows, dataset._fingerprint)
