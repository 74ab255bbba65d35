"""The predict stage: labels and class probabilities from an exported or registered model.

A model is an export directory (`train.output_dir/model`) or a registry URI such as
`models:/NAME@champion`, which is downloaded once (see `ftpipe.registry.download`). Files of any
size stream through in chunks: CSV, TSV, JSONL or Parquet in, CSV, JSONL or Parquet out, with a
progress bar over the bytes (or rows) read.

The output is written beside its target and moved into place only when every row is in, so an
unreadable input (a truncated `.gz`, a malformed row) leaves no partial file and any previous
output untouched. CSV cells that a spreadsheet would run as a formula (those starting with `=`,
`+`, `-`, `@`, a tab or a carriage return, plain numbers aside) are prefixed with `'`, as OWASP
advises against CSV injection, and every string cell is quoted; JSONL and Parquet keep every
value as it is.

Inference tokenizes exactly as prep did (`ftpipe.train.predictor`), so an export scores here
what it scored in training. torch loads only with a model, so commands that merely read
predictions files start quickly.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftpipe.data.sources import DECOMPRESSION_ERRORS, unreadable
from ftpipe.errors import DataError, FtpipeError, reason
from ftpipe.train.predictor import Predictor

CHUNK_ROWS = 4096
"""Rows read, predicted and written at a time: bounds memory whatever the file size."""

REGISTRY_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a CSV cell as a formula (OWASP CSV injection)."""

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""A plain number such as `-1` or `+2.5e3`: a spreadsheet reads it as a value, never a formula."""


@dataclass(frozen=True)
class PredictResult:
    """What the predict stage produced.

    Attributes:
        frame: For texts given directly: one row of predictions per text.
        output: For a file: where the predictions were written.
        rows: Rows predicted.
        seconds: Wall time of the prediction.
    """

    frame: pd.DataFrame | None
    output: Path | None
    rows: int
    seconds: float


def run(
    model: str,
    input_file: Path | None = None,
    texts: Sequence[str] = (),
    text_pairs: Sequence[str] = (),
    output: Path | None = None,
    text_column: str = "text",
    pair_column: str | None = None,
    batch_size: int = 64,
    tracking_uri: str | None = None,
) -> PredictResult:
    """Predict texts given directly, or every row of a file, with an exported or registered model.

    Raises:
        FtpipeError: On neither or both of `input_file` and `texts`, or a missing input.
    """
    if (input_file is None) == (not texts):
        raise FtpipeError("Give either --input FILE or --text TEXT (not both, not neither).")
    if input_file is not None and not input_file.is_file():
        raise FtpipeError(f"--input {input_file}: no such file.")
    predictor = Predictor.load(resolve_model(model, tracking_uri), batch_size)
    started = time.perf_counter()
    if texts:
        frame = predictor.frame(predictor.probabilities(texts, text_pairs or None))
        return PredictResult(frame, None, len(frame), time.perf_counter() - started)
    target = output or default_output(input_file)
    rows = predict_file(predictor, input_file, target, text_column, pair_column)
    return PredictResult(None, target, rows, time.perf_counter() - started)


def resolve_model(ref: str | Path, tracking_uri: str | None = None) -> Path:
    """An export directory for a model reference: a local directory or a registry URI.

    Raises:
        FtpipeError: If a local reference does not exist.
    """
    text = str(ref)
    if text.startswith(REGISTRY_SCHEMES):
        from ftpipe.registry.download import download_export

        return download_export(text, tracking_uri)
    path = Path(text)
    if not path.is_dir():
        raise FtpipeError(
            f"--model {text}: no such directory. Pass an export directory (train.output_dir/model) "
            "or a registry URI such as models:/NAME@champion."
        )
    return path


def read_chunks(
    path: Path, columns: Sequence[str], chunk_rows: int | None = None
) -> Iterator[tuple[pd.DataFrame, int]]:
    """Yield (rows with `columns`, progress units consumed) from a CSV/TSV/JSONL/Parquet file.

    Progress is in bytes of the file as stored, except for Parquet (rows).

    Args:
        path: The input file, optionally gzipped.
        columns: The columns to keep.
        chunk_rows: Rows per chunk (default `CHUNK_ROWS`).

    Raises:
        FtpipeError: If the format is unknown or a column is missing.
        DataError: If the file cannot be read to its end: truncated or corrupt compressed
            data, text that is not UTF-8, or rows that do not parse.
    """
    try:
        yield from _chunks(path, columns, chunk_rows or CHUNK_ROWS)
    except DECOMPRESSION_ERRORS as exc:  # worded as prep words them
        raise unreadable(f"--input {path}", exc, named_by="--input") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"--input {path} is not UTF-8 text ({reason(exc)}): re-encode it as UTF-8."
        ) from None
    except (ValueError, OSError) as exc:  # pandas' and pyarrow's parse errors are ValueErrors
        raise DataError(
            f"--input {path} cannot be read ({reason(exc)}). Fix the file, or check that its "
            "extension (.csv, .tsv, .jsonl, .parquet, .txt) matches its content."
        ) from None


def _chunks(
    path: Path, columns: Sequence[str], chunk_rows: int
) -> Iterator[tuple[pd.DataFrame, int]]:
    suffixes = [s.lower() for s in path.suffixes]
    packed = suffixes[-1:] == [".gz"]
    kind = (suffixes[-2] if packed and len(suffixes) > 1 else suffixes[-1]) if suffixes else ""
    if kind == ".parquet":
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(path)
        _check_columns(path, columns, handle.schema_arrow.names)
        for batch in handle.iter_batches(batch_size=chunk_rows, columns=list(columns)):
            yield batch.to_pandas(), batch.num_rows
        return
    if kind not in (".csv", ".tsv", ".jsonl", ".json", ".txt"):
        raise FtpipeError(
            f"--input {path}: unknown format {kind or '(no extension)'}. Use .csv, .tsv, .jsonl, "
            ".parquet or .txt (one text per line), optionally gzipped."
        )
    with path.open("rb") as raw, gzip.open(raw) if packed else nullcontext(raw) as stream:
        if kind == ".txt":
            reader = _text_lines(stream, columns[0], chunk_rows)
        elif kind in (".jsonl", ".json"):
            reader = pd.read_json(stream, lines=True, dtype=False, chunksize=chunk_rows)
        else:
            tsv = kind == ".tsv"
            reader = pd.read_csv(
                stream, sep="\t" if tsv else ",", dtype=str, keep_default_na=False,
                quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, chunksize=chunk_rows,
            )  # fmt: skip
        done = 0
        with reader as chunks:
            for chunk in chunks:
                _check_columns(path, columns, list(chunk.columns))
                position = raw.tell()
                yield chunk[list(columns)], position - done
                done = position


@contextmanager
def _text_lines(stream: Any, column: str, chunk_rows: int) -> Iterator[Iterator[pd.DataFrame]]:
    # One text per line, taken literally (no quoting): the simplest input to pipe in.
    lines = io.TextIOWrapper(stream, encoding="utf-8", newline="")

    def chunks() -> Iterator[pd.DataFrame]:
        while block := list(itertools.islice(lines, chunk_rows)):
            yield pd.DataFrame({column: [line.rstrip("\r\n") for line in block]})

    yield chunks()


def _check_columns(path: Path, wanted: Sequence[str], present: list[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise FtpipeError(
            f"--input {path} has no column {', '.join(map(repr, missing))}; it has "
            f"{', '.join(map(repr, present))}. Name the text column with --text-column."
        )


def escape_formula(value: Any) -> Any:
    """A string cell a spreadsheet would run as a formula, prefixed with `'`; others as they are.

    Cells starting with `=`, `+`, `-`, `@`, a tab or a carriage return are escaped, as OWASP
    advises against CSV injection, except plain numbers such as `-1` (a label, a score).
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(value):
        return "'" + value
    return value


def escape_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with `escape_formula` applied to its header and to every string cell."""
    escaped = frame.rename(columns=escape_formula)
    for i, dtype in enumerate(escaped.dtypes):
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            escaped.isetitem(i, escaped.iloc[:, i].map(escape_formula))
    return escaped


class Writer:
    """Writes prediction chunks to a CSV, JSONL or Parquet file (chosen by extension).

    The rows go to a temporary file beside `path`, moved into place by `commit` only; `discard`
    (or an exception inside a `with` block) removes it and leaves `path` as it was.
    """

    def __init__(self, path: Path):
        """Open a temporary file beside `path` for writing.

        Raises:
            FtpipeError: If the extension is not one of .csv, .jsonl, .parquet.
        """
        self.path = path
        self.kind = path.suffix.lower()
        if self.kind not in (".csv", ".jsonl", ".parquet"):
            raise FtpipeError(f"--output {path}: use a .csv, .jsonl or .parquet file name.")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Same directory, so the final move is atomic; created as any file is (umask honoured).
        self.temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self._parquet = None
        self._text = None
        if self.kind != ".parquet":
            self._text = self.temporary.open("w", encoding="utf-8", newline="")
        self._header = True

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def write(self, frame: pd.DataFrame) -> None:
        """Append rows."""
        if self.kind == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.temporary, table.schema)
            self._parquet.write_table(table)
        elif self.kind == ".csv":
            # Strings quoted: Python < 3.12 leaves a lone carriage return unquoted, which splits
            # the row for any reader; numbers stay bare, so they still read as numbers.
            escaped = escape_formulas(frame)
            escaped.to_csv(self._text, index=False, header=self._header, lineterminator="\n",
                           quoting=csv.QUOTE_NONNUMERIC)  # fmt: skip
        else:
            for record in frame.to_dict(orient="records"):
                self._text.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._header = False

    def close(self) -> None:
        """Flush and close the temporary file (it stays where it is)."""
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._text is not None:
            self._text.close()
            self._text = None

    def commit(self) -> None:
        """Close, and move the complete file into place (replacing any previous one)."""
        self.close()
        if self.kind == ".parquet" and self._header:  # no rows, so no schema: no file either
            self.temporary.unlink(missing_ok=True)
            return
        os.replace(self.temporary, self.path)

    def discard(self) -> None:
        """Close and remove the temporary file; `path` is left as it was."""
        try:
            self.close()
        finally:
            self.temporary.unlink(missing_ok=True)


def default_output(path: Path) -> Path:
    """`data.csv` -> `data.predictions.csv` (Parquet stays Parquet, JSONL stays JSONL)."""
    name = path.name.removesuffix(".gz")
    stem, _, suffix = name.rpartition(".")
    suffix = {"parquet": "parquet", "jsonl": "jsonl", "json": "jsonl"}.get(suffix, "csv")
    return path.with_name(f"{stem or name}.predictions.{suffix}")


def predict_file(
    predictor: Predictor,
    source: Path,
    target: Path,
    text_column: str = "text",
    pair_column: str | None = None,
    progress: bool | None = None,
) -> int:
    """Predict every row of `source` into `target`; return the rows written.

    Output columns: `row` (0-based input row), the text column(s), `label`, `prob_<label>`.
    The file appears only once complete; see `Writer`.

    Args:
        predictor: The loaded model.
        source: CSV/TSV/JSONL/Parquet/TXT input, optionally gzipped.
        target: CSV/JSONL/Parquet output.
        text_column: The column holding the text.
        pair_column: The column holding the second text, for pair models.
        progress: Show a progress bar; None shows it on a terminal only.

    Raises:
        FtpipeError: On a pair model without `pair_column`, or a bad output name.
        DataError: If `source` cannot be read to its end (nothing is written then).
    """
    from tqdm.auto import tqdm

    if predictor.pairs and pair_column is None:
        raise FtpipeError(
            "This model classifies text pairs: name the second text's column with --pair-column."
        )
    columns = [text_column] + ([pair_column] if pair_column else [])
    is_parquet = source.suffix.lower() == ".parquet"
    total = _parquet_rows(source) if is_parquet else source.stat().st_size
    rows = 0
    with Writer(target) as writer, tqdm(
        total=total, unit="rows" if is_parquet else "B", unit_scale=not is_parquet,
        desc="predict", disable=None if progress is None else not progress,
    ) as bar:  # fmt: skip
        for chunk, consumed in read_chunks(source, columns):
            texts = chunk[text_column].astype(str).tolist()
            pairs = chunk[pair_column].astype(str).tolist() if pair_column else None
            scored = predictor.frame(predictor.probabilities(texts, pairs))
            out = pd.DataFrame({"row": np.arange(rows, rows + len(chunk))})
            for column in columns:
                out[column] = chunk[column].to_numpy()
            writer.write(pd.concat([out, scored], axis=1))
            rows += len(chunk)
            bar.update(consumed)
    return rows


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
