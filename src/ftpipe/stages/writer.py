"""Prediction files: CSV, JSONL or Parquet, written beside their target and moved in at the end.

CSV cells that a spreadsheet would run as a formula (those starting with `=`, `+`, `-`, `@`, a
tab or a carriage return, plain numbers aside) are prefixed with `'`, as OWASP advises against
CSV injection, and every string cell is quoted; JSONL and Parquet keep every value as it is.
Lists (a sentence's words, its entities and tags) stay lists in JSONL and are JSON text in
CSV and Parquet.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftpipe.errors import FtpipeError

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a CSV cell as a formula (OWASP CSV injection)."""

NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""A plain number such as `-1` or `+2.5e3`: a spreadsheet reads it as a value, never a formula."""


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


def _lists_as_json(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every list or array cell as its JSON text."""
    nested = [c for c in frame.columns if frame[c].map(is_list).any()]
    if not nested:
        return frame
    frame = frame.copy()
    for column in nested:
        frame[column] = frame[column].map(
            lambda v: json.dumps(_plain(v), ensure_ascii=False) if is_list(v) else v
        )
    return frame


def is_list(value: Any) -> bool:
    """Whether a cell holds a list (or tuple, or numpy array), not a scalar."""
    return isinstance(value, (list, tuple, np.ndarray))


def _plain(value: Any) -> Any:
    """A cell as plain Python (numpy arrays and scalars become lists and numbers)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if isinstance(value, np.generic) else value


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
        """Append rows; lists (a sentence's words, entities, tags) stay lists only in JSONL.

        CSV and Parquet get them as JSON text: one column type whatever a chunk holds (a chunk
        of sentences without entities would otherwise give Parquet a list of nulls).
        """
        if self.kind != ".jsonl":
            frame = _lists_as_json(frame)
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
                self._text.write(json.dumps(_plain(record), ensure_ascii=False) + "\n")
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
