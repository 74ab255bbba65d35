"""`ftpipe prep`: read, validate, split, tokenize, describe and fingerprint the data.

Outputs, under `data.output_dir`:

    train/part-00000.parquet ...   text, [text_pair], label, input_ids, [token_type_ids], location
    eval/part-00000.parquet ...
    label_map.json                 id2label / label2id
    stats.json                     rows per split and label, drops, token lengths, shift signals
    fingerprint.json               the fingerprint and everything it covers

Prep reads each input twice, in bounded batches, so memory does not grow with the texts:
pass 1 (`ftpipe.data.scan`) checks every row and keeps ~40 bytes per valid row (position,
line, label, a digest of its text), on which duplicates, conflicts, leakage, the split and
the sampling are decided; pass 2 (`ftpipe.data.shards`) reads the input again and tokenizes
and writes each kept row as its split's shard fills up.

The directory is built beside its target and swapped in at the end, so a failed run leaves
the previous outputs untouched and never a half-written directory; staging directories left
by a killed prep are removed by the next one. Nothing in the outputs depends on time or
machine, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ftpipe.config.schema import Config, DataConfig
from ftpipe.data.fingerprint import fingerprint, prep_identity
from ftpipe.data.prepared import PrepDir
from ftpipe.data.scan import Index, Scan, drop_leakage
from ftpipe.data.shards import ShardWriter, write_rows
from ftpipe.data.sources import Stream, input_digest
from ftpipe.data.split import split_rows
from ftpipe.data.stats import split_stats
from ftpipe.data.tokenize import TokenCounts, load_tokenizer, tokenizer_digest
from ftpipe.data.validate import check_trainable, format_counts, label_variants
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
    splits, labels, streams = _load_splits(config)
    log.info(
        "Tokenizing %s train and %s eval rows (max_length %d)",
        f"{len(splits['train']):,}",
        f"{len(splits['eval']):,}",
        data.max_length,
    )
    task = get_task(data.task)
    digests = {role: stream.digest for role, stream in streams.items()}
    identity = prep_identity(config, digests, tokenizer_digest(tokenizer))
    data_fingerprint = fingerprint(identity)

    remove_orphans(output_dir)
    staging = output_dir.with_name(f".{output_dir.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tokens = _write_splits(staging, splits, labels, streams, tokenizer, config)
        stats = {
            "fingerprint": data_fingerprint,
            "task": data.task,
            "model": config.model.name,
            "max_length": data.max_length,
            "labels": list(labels.names) if task.labelled else [],
            "splits": {
                name: split_stats(
                    splits[name], tokens[name], labels if task.labelled else None, data.max_length
                )
                for name in SPLITS
            },
        }
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
        role: input_digest(source, data)
        for role, source in (("train", data.train), ("eval", data.eval))
        if source is not None
    }
    identity = prep_identity(config, digests, tokenizer_digest(load_tokenizer(config.model)))
    return fingerprint(identity)


def _write_splits(
    staging: Path,
    splits: dict[str, Index],
    labels: LabelMap,
    streams: dict[str, Stream],
    tokenizer: Tokenizer,
    config: Config,
) -> dict[str, TokenCounts]:
    """Pass 2: read each input again, writing its rows to their splits' shards."""
    data, task = config.data, get_task(config.data.task)
    writers = {
        name: ShardWriter(staging / name, tokenizer, task, data.max_length, data.shard_rows,
                          splits[name].pair_column is not None)
        for name in SPLITS
    }  # fmt: skip
    label2id = labels.label2id
    for stream in streams.values():
        mine = {
            name: (rows, rows.encoded(label2id))
            for name, rows in splits.items()
            if rows.source == stream.source
        }
        if mine:
            write_rows(stream, mine, writers)
    return {name: writer.close() for name, writer in writers.items()}


def _load_splits(config: Config) -> tuple[dict[str, Index], LabelMap, dict[str, Stream]]:
    """Pass 1: read and check the inputs; return the train and eval rows, labels and inputs."""
    data = config.data
    streams = {"train": Stream(data.train, data)}
    labelled = get_task(data.task).labelled
    train = _scan(streams["train"], data, data.labels, "data.labels")
    if labelled:
        check_trainable(train)
        _warn_label_variants(train)
    if data.eval is not None:
        streams["eval"] = Stream(data.eval, data)

        def same_bytes() -> None:
            """Refuse an eval input identical to train (checked once eval is read)."""
            if streams["eval"].digest == streams["train"].digest:
                raise DataError(
                    f"data.eval ({data.eval}) holds the same bytes as data.train ({data.train}), "
                    "so eval metrics would measure memorisation. Point data.eval at held-out "
                    "data, or set it to null to split one off train."
                )

        # Eval may only use labels the model can learn: declared ones, or those in train.
        if data.labels is not None:
            known, known_from = data.labels, "data.labels"
        else:
            known, known_from = sorted(train.label_counts()), f"the labels in {data.train}"
        held_out = _scan(streams["eval"], data, known, known_from, same_bytes)
        train = drop_leakage(train, held_out, data.on_error)
        if labelled:
            check_trainable(train)
        empty_fix = f"Add rows to {data.eval}"
    else:
        held_out = None
        empty_fix = "Raise data.eval_fraction, or add rows"
    labels = LabelMap.build(data.labels, list(train.label_counts()))
    if held_out is None:
        # Copies of a text (data.duplicates=keep) stay on one side, so the split cannot leak.
        train_idx, eval_idx = split_rows(
            train.encoded(labels.label2id), data.eval_fraction, config.seed, groups=train.groups
        )
        # Drops happened before the split, so they are counted once, on train.
        train, held_out = train.take(train_idx, train.dropped), train.take(eval_idx, Counter())
    if not len(held_out):
        raise DataError(f"The eval set is empty after validation. {empty_fix}.")
    train = _sample(train, data.max_train_rows, labels, config.seed + 1, "data.max_train_rows")
    held_out = _sample(held_out, data.max_eval_rows, labels, config.seed + 2, "data.max_eval_rows")
    # Unlabelled tasks have one implicit class, "": nothing to warn about.
    _check_classes_trained(train, held_out, labels, data.min_rows_per_class if labelled else 0)
    for split in (train, held_out):
        if split.dropped:
            log.warning(
                "%s: dropped %d rows (%s)",
                split.source,
                split.dropped.total(),
                format_counts(split.dropped),
            )
    return {"train": train, "eval": held_out}, labels, streams


def _scan(
    stream: Stream,
    data: DataConfig,
    known: list[str] | None,
    known_from: str,
    check: Callable[[], None] | None = None,
) -> Index:
    """Read one input batch by batch and check it; `check` runs once it is read, if not empty."""
    log.info("Reading %s", stream.source)
    scan = Scan(stream.source, data, known, known_from)
    for table in stream.batches():
        scan.add(table)
    log.info("%s: %s rows", stream.source, f"{scan.rows:,}")
    if scan.rows and check is not None:
        check()
    return scan.finish(stream.batches)


def _sample(rows: Index, keep: int | None, labels: LabelMap, seed: int, key: str) -> Index:
    """About `keep` of the rows, a share of each class (the stratified, seeded split)."""
    if keep is None or keep >= len(rows):
        return rows
    kept, _ = split_rows(rows.encoded(labels.label2id), 1 - keep / len(rows), seed)
    log.info("%s: keeping %d of %d rows of %s", key, len(kept), len(rows), rows.source)
    return rows.take(kept, rows.dropped)


def _warn_label_variants(train: Index) -> None:
    """Warn about labels that differ only in case, width, accents or invisible characters."""
    for group in label_variants(train.label_counts()):
        listed = ", ".join(f"{name!r} ({n} rows)" for name, n in group)
        log.warning(
            "%s: labels %s are variants of one another (they differ only in case, width, "
            "accents or invisible characters) and became separate classes. Write them one way "
            "in the data, or declare data.labels to have such variants refused.",
            train.source,
            listed,
        )


def _check_classes_trained(train: Index, held_out: Index, labels: LabelMap, min_rows: int) -> None:
    """Every eval class needs training rows; thin classes and classes without eval rows warn."""
    trained = train.label_counts()
    evaluated = set(held_out.label_counts())
    untrained_eval = sorted(evaluated - set(trained))
    if untrained_eval:
        raise DataError(
            f"Eval label(s) {', '.join(map(repr, untrained_eval))} in {held_out.source} have no "
            f"training rows left in {train.source} (dropped: "
            f"{format_counts(train.dropped) or 'none'}). "
            "Add training rows for them, or remove them from the eval set."
        )
    thin = [f"{name!r} ({trained[name]})" for name in labels.names if 0 < trained[name] < min_rows]
    if thin:
        log.warning(
            "%s: class(es) %s have fewer than data.min_rows_per_class=%d training rows; a model "
            "learns little from so few. Add rows, or merge or remove these classes.",
            train.source,
            ", ".join(thin),
            min_rows,
        )
    for name in labels.names:
        if name not in trained:
            log.warning("Declared label %r has no training rows in %s", name, train.source)
        elif name not in evaluated:
            log.warning(
                "Label %r has no eval rows in %s, so its metrics cannot be measured. Add eval "
                "rows of it.",
                name,
                held_out.source,
            )


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


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def remove_orphans(target: Path) -> None:
    """Remove staging (`.NAME.tmp-…`) and retired (`.NAME.old-…`) directories of dead preps.

    A prep killed while writing leaves them beside its target. Their names end in the pid of
    the prep that made them, after its host name when it wrote one; a directory is removed only
    when it was made on this host (or names no host) and no process has that pid any more.
    """
    for path in target.parent.glob(f".{target.name}.*-*"):
        kind, _, owner = path.name[len(target.name) + 2 :].partition("-")
        host, _, pid = owner.rpartition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or not path.is_dir():
            continue
        if host and host != socket.gethostname():
            continue  # another machine's prep, on a shared file system: cannot tell
        if not _process_exists(int(pid)):
            log.info("Removing %s, left by prep process %s that no longer runs", path, pid)
            shutil.rmtree(path, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _swap_in(staging: Path, target: Path) -> None:
    """Replace `target` with `staging`; the old outputs go only after the new ones are in."""
    retired = target.with_name(f".{target.name}.old-{socket.gethostname()}-{os.getpid()}")
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
