"""`ftpipe prep`: read, validate, split, tokenize, describe and fingerprint the data.

Outputs, under `data.output_dir`:

    train/part-00000.parquet ...   text, [text_pair], label, input_ids, [token_type_ids], location
    eval/part-00000.parquet ...
    label_map.json                 id2label / label2id
    stats.json                     rows per split and label, drops, token lengths, shift signals
    fingerprint.json               the fingerprint and everything it covers

The directory is built beside its target and swapped in at the end, so a failed run leaves
the previous outputs untouched and never a half-written directory. Nothing in the outputs
depends on time or machine, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ftpipe.config.schema import Config
from ftpipe.data.fingerprint import fingerprint, prep_identity
from ftpipe.data.prepared import PrepDir
from ftpipe.data.sources import Table, read_table
from ftpipe.data.split import stratified_split
from ftpipe.data.stats import split_stats
from ftpipe.data.tokenize import Tokenized, load_tokenizer, tokenize, tokenizer_digest
from ftpipe.data.validate import (
    Examples,
    check_trainable,
    drop_leakage,
    format_counts,
    validate_table,
)
from ftpipe.errors import DataError
from ftpipe.tasks import LabelMap, get_task

log = logging.getLogger(__name__)

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class PrepResult:
    """Where prep wrote, the data fingerprint, and the statistics it computed."""

    output_dir: Path
    fingerprint: str
    stats: dict[str, Any]


def run_prep(config: Config) -> PrepResult:
    """Run the prep stage for a config; see the module docstring for the outputs.

    Raises:
        DataError: On unreadable inputs, invalid rows under `data.on_error=fail`, or an
            output directory that is not prep's to replace.
    """
    data = config.data
    output_dir = _checked_output_dir(data.output_dir, [data.train, data.eval])
    tokenizer = load_tokenizer(config.model)
    splits, labels, digests = _load_splits(config)
    log.info(
        "Tokenizing %s train and %s eval rows (max_length %d)",
        f"{len(splits['train']):,}",
        f"{len(splits['eval']):,}",
        data.max_length,
    )
    tokenized = {
        name: tokenize(tokenizer, ex.texts, ex.pairs, data.max_length, desc=f"tokenize {name}")
        for name, ex in splits.items()
    }
    task = get_task(data.task)
    identity = prep_identity(config, digests, tokenizer_digest(tokenizer))
    data_fingerprint = fingerprint(identity)
    stats = {
        "fingerprint": data_fingerprint,
        "task": data.task,
        "model": config.model.name,
        "max_length": data.max_length,
        "labels": list(labels.names) if task.labelled else [],
        "splits": {
            name: split_stats(
                splits[name], tokenized[name], labels if task.labelled else None, data.max_length
            )
            for name in SPLITS
        },
    }

    staging = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for name in SPLITS:
            columns = task.prep_columns(tokenized[name])
            _write_split(staging / name, splits[name], labels, tokenized[name], columns,
                         data.shard_rows)  # fmt: skip
        layout = PrepDir(staging)
        if task.labelled:  # unlabelled tasks (language modelling) have no label map
            labels.save(layout.label_map_path)
        _write_json(layout.stats_path, stats)
        _write_json(layout.fingerprint_path, {"fingerprint": data_fingerprint, **identity})
        _swap_in(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PrepResult(output_dir, data_fingerprint, stats)


def input_fingerprint(config: Config) -> str:
    """The fingerprint `run_prep` will write, from the inputs' bytes and the tokenizer alone.

    The pipeline computes it first, uncached, so that prep and every stage after it are
    cached on what the data is rather than on where it lies.
    """
    data = config.data
    digests = {
        role: _read(source, config).digest
        for role, source in (("train", data.train), ("eval", data.eval))
        if source is not None
    }
    identity = prep_identity(config, digests, tokenizer_digest(load_tokenizer(config.model)))
    return fingerprint(identity)


def _load_splits(config: Config) -> tuple[dict[str, Examples], LabelMap, dict[str, str]]:
    """Read and validate the inputs; return the train and eval examples, labels and digests."""
    data = config.data
    train_table = _read(data.train, config)
    digests = {"train": train_table.digest}
    labelled = get_task(data.task).labelled
    train = validate_table(train_table, data, data.labels, "data.labels")
    if labelled:
        check_trainable(train)
    if data.eval is not None:
        eval_table = _read(data.eval, config)
        digests["eval"] = eval_table.digest
        if eval_table.digest == train_table.digest:
            raise DataError(
                f"data.eval ({data.eval}) holds the same bytes as data.train ({data.train}), so "
                "eval metrics would measure memorisation. Point data.eval at held-out data, or "
                "set it to null to split one off train."
            )
        # Eval may only use labels the model can learn: declared ones, or those in train.
        if data.labels is not None:
            known, known_from = data.labels, "data.labels"
        else:
            known, known_from = sorted(set(train.labels)), f"the labels in {data.train}"
        held_out = validate_table(eval_table, data, known, known_from)
        train = drop_leakage(train, held_out, data.on_error)
        if labelled:
            check_trainable(train)
        empty_fix = f"Add rows to {data.eval}"
    else:
        held_out = None
        empty_fix = "Raise data.eval_fraction, or add rows"
    labels = LabelMap.build(data.labels, train.labels)
    if held_out is None:
        # Copies of a text (data.duplicates=keep) stay on one side, so the split cannot leak.
        train_idx, eval_idx = stratified_split(
            labels.encode(train.labels), data.eval_fraction, config.seed, groups=train.keys()
        )
        # Drops happened before the split, so they are counted once, on train.
        train, held_out = train.take(train_idx, train.dropped), train.take(eval_idx, Counter())
    if not len(held_out):
        raise DataError(f"The eval set is empty after validation. {empty_fix}.")
    train = _sample(train, data.max_train_rows, labels, config.seed + 1, "data.max_train_rows")
    held_out = _sample(held_out, data.max_eval_rows, labels, config.seed + 2, "data.max_eval_rows")
    _check_classes_trained(train, held_out, labels)
    for split in (train, held_out):
        if split.dropped:
            log.warning(
                "%s: dropped %d rows (%s)",
                split.source,
                split.dropped.total(),
                format_counts(split.dropped),
            )
    return {"train": train, "eval": held_out}, labels, digests


def _sample(examples: Examples, rows: int | None, labels: LabelMap, seed: int, key: str):
    """About `rows` of the examples, a share of each class (the stratified, seeded split)."""
    if rows is None or rows >= len(examples):
        return examples
    kept, _ = stratified_split(labels.encode(examples.labels), 1 - rows / len(examples), seed)
    log.info("%s: keeping %d of %d rows of %s", key, len(kept), len(examples), examples.source)
    return examples.take(kept, examples.dropped)


def _check_classes_trained(train: Examples, held_out: Examples, labels: LabelMap) -> None:
    """Every eval class needs training rows; declared classes without any get a warning."""
    trained = set(train.labels)
    untrained_eval = sorted(set(held_out.labels) - trained)
    if untrained_eval:
        raise DataError(
            f"Eval label(s) {', '.join(map(repr, untrained_eval))} in {held_out.source} have no "
            f"training rows left in {train.source} (dropped: "
            f"{format_counts(train.dropped) or 'none'}). "
            "Add training rows for them, or remove them from the eval set."
        )
    for name in labels.names:
        if name not in trained:
            log.warning("Declared label %r has no training rows in %s", name, train.source)


def _checked_output_dir(output_dir: str, inputs: list[str | None]) -> Path:
    """Resolve data.output_dir and refuse anything that is not prep's to replace."""
    path = Path(output_dir).expanduser().resolve()
    if path.is_file():
        raise DataError(
            f"data.output_dir={output_dir} is a file. Point it at a directory prep may own."
        )
    local_inputs = [s for s in inputs if s and "://" not in s and not s.startswith("hf:")]
    for source in local_inputs:
        if path in Path(source).expanduser().resolve().parents:
            raise DataError(
                f"data.output_dir={output_dir} contains the input {source}, and prep replaces "
                "its output directory whole. Write the outputs somewhere else."
            )
    if path.is_dir() and any(path.iterdir()) and not PrepDir(path).fingerprint_path.exists():
        raise DataError(
            f"data.output_dir={output_dir} is a non-empty directory that prep did not write (it "
            "has no fingerprint.json), and prep replaces its output directory whole. Point "
            "data.output_dir at a new or empty directory."
        )
    return path


def _read(source: str, config: Config) -> Table:
    log.info("Reading %s", source)
    table = read_table(source, config.data)
    log.info("%s: %s rows", source, f"{len(table):,}")
    return table


def _write_split(
    directory: Path,
    examples: Examples,
    labels: LabelMap,
    tokens: Tokenized,
    task_columns: dict[str, pa.Array],
    shard_rows: int,
) -> None:
    columns: dict[str, pa.Array] = {"text": pa.array(examples.texts, pa.string())}
    if examples.pairs is not None:
        columns["text_pair"] = pa.array(examples.pairs, pa.string())
    columns["label"] = pa.array(labels.encode(examples.labels), pa.int32())
    columns["input_ids"] = pa.array(tokens.input_ids, pa.list_(pa.int32()))
    columns |= task_columns
    columns["location"] = pa.array(examples.locations, pa.string())
    table = pa.table(columns)
    directory.mkdir(parents=True)
    for shard, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
        pq.write_table(
            table.slice(start, shard_rows),
            directory / f"part-{shard:05d}.parquet",
            compression="zstd",
        )


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _swap_in(staging: Path, target: Path) -> None:
    """Replace `target` with `staging`; the old outputs go only after the new ones are in."""
    retired = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
