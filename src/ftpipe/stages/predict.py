"""The predict stage: what a model's task returns, from an exported or registered model.

Classifiers return a label and a probability per class; entity taggers return each input's
entities (text, type, character start and end, score) and each word's tag, from free text or
from a column of word lists; causal LMs return the `generated` answer to each prompt, or to
each conversation of a column of message lists.

A model is an export directory (`train.output_dir/model`) or a registry URI such as
`models:/NAME@champion`, which is downloaded once (see `ftpipe.registry.download`). Files of any
size stream through in chunks: CSV, TSV, JSONL or Parquet in, CSV, JSONL or Parquet out, with a
progress bar over the bytes (or rows) read.

The output is written beside its target and moved into place only when every row is in, so an
unreadable input (a truncated `.gz`, a malformed row) leaves no partial file and any previous
output untouched (`ftpipe.stages.writer`, which also guards CSV cells against formula
injection).

Inference tokenizes exactly as prep did (`ftpipe.train.predictor`), so an export scores here
what it scored in training. torch loads only with a model, so commands that merely read
predictions files start quickly.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftpipe.config.generation import GenerateConfig
from ftpipe.data.sources import DECOMPRESSION_ERRORS, unreadable
from ftpipe.errors import DataError, FtpipeError, reason
from ftpipe.stages.writer import Writer, is_list
from ftpipe.train.predictor import Predictor

CHUNK_ROWS = 4096
"""Rows read, predicted and written at a time: bounds memory whatever the file size."""

GENERATE_CHUNK_ROWS = 64
"""Prompts a causal LM answers per chunk written."""

REGISTRY_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


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
    generation: GenerateConfig | None = None,
    stream: bool = False,
) -> PredictResult:
    """Predict texts given directly, or every row of a file, with an exported or registered model.

    A causal LM answers each text (a prompt) with `generation`'s settings (None: those it was
    trained with); with `stream`, a single prompt's answer is printed as it is generated.

    Raises:
        FtpipeError: On neither or both of `input_file` and `texts`, or a missing input.
    """
    if (input_file is None) == (not texts):
        raise FtpipeError("Give either --input FILE or --text TEXT (not both, not neither).")
    if input_file is not None and not input_file.is_file():
        raise FtpipeError(f"--input {input_file}: no such file.")
    directory = resolve_model(model, tracking_uri)
    predictor = Predictor.load(directory, batch_size, "predict", generation)
    started = time.perf_counter()
    if texts and stream and predictor.task.generates:
        from transformers import TextStreamer

        streamer = TextStreamer(predictor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        frame = predictor.task.predictions(predictor.generator.ask(texts, streamer), ())
        return PredictResult(frame, None, len(frame), time.perf_counter() - started)
    if texts:
        frame = predictor.predict(texts, text_pairs or None)
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
        # Generation is slow per row: smaller chunks keep the progress bar moving.
        chunk_rows = GENERATE_CHUNK_ROWS if predictor.task.generates else CHUNK_ROWS
        for chunk, consumed in read_chunks(source, columns, chunk_rows):
            cells = chunk[text_column].tolist()
            # A column of lists is pre-tokenized words (JSONL or Parquet `tokens`), or for a
            # causal LM conversations (lists of messages).
            words = [list(c) for c in cells] if cells and all(map(is_list, cells)) else None
            if words is None or predictor.task.generates:
                texts = [str(c) for c in cells]
            else:
                texts = [" ".join(w) for w in words]
            pairs = chunk[pair_column].astype(str).tolist() if pair_column else None
            scored = predictor.predict(texts, pairs, words)
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
