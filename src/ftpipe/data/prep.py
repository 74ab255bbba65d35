"""`ftpipe prep`: read, validate, split, tokenize, describe and fingerprint the data.

Outputs, under `data.output_dir`:

    train/part-00000.parquet ...   text, [text_pair], label, input_ids, [token_type_ids], location
    eval/part-00000.parquet ...
    test/part-00000.parquet ...    only with data.test or data.test_fraction; tune and train
                                   never read it (`ftpipe.data.partition`)
    label_map.json                 id2label / label2id
    stats.json                     rows per split and label, drops, token lengths, shift signals
    fingerprint.json               the fingerprint and everything it covers

Prep reads each input twice, in bounded batches, so memory does not grow with the texts:
pass 1 (`ftpipe.data.scan`) checks every row and keeps ~40 bytes per valid row (position,
line, label, a digest of its text), on which duplicates, conflicts, leakage, the splits and
the sampling are decided (`ftpipe.data.partition`); pass 2 (`ftpipe.data.shards`) reads the
input again and tokenizes and writes each kept row as its split's shard fills up.

The directory is built beside its target and swapped in at the end, so a failed run leaves
the previous outputs untouched and never a half-written directory; staging directories left
by a killed prep are removed by the next one. Nothing in the outputs depends on time or
machine, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ftpipe.config.schema import Config
from ftpipe.data.chats import ChatRenderer, template_digest
from ftpipe.data.completions import end_of_text_id
from ftpipe.data.fingerprint import fingerprint, prep_identity
from ftpipe.data.partition import load_splits
from ftpipe.data.prepared import INPUTS, PrepDir
from ftpipe.data.scan import Index
from ftpipe.data.shards import ShardWriter, write_rows
from ftpipe.data.sources import Stream, input_digest
from ftpipe.data.stats import split_stats
from ftpipe.data.tokenize import TokenCounts, load_tokenizer, tokenizer_digest
from ftpipe.errors import DataError
from ftpipe.tasks import LabelMap, get_task

log = logging.getLogger(__name__)


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
    output_dir = _checked_output_dir(data.output_dir, [getattr(data, role) for role in INPUTS])
    tokenizer = load_tokenizer(config.model)
    with _fewer_collections():
        return _prep(config, output_dir, tokenizer)


@contextmanager
def _fewer_collections(young: int = 100_000) -> Iterator[None]:
    """Run Python's cycle collector every `young` allocations instead of every 700.

    Prep allocates millions of small lists (parsed rows, token ids) that live until their
    batch or shard is done. At CPython's default threshold the collector runs thousands of
    times and rescans every survivor (and, in full collections, everything torch and
    transformers imported): a fifth of prep's time. Prep makes almost no reference cycles, so
    collecting less often costs no memory. The previous threshold is restored on exit.
    """
    previous = gc.get_threshold()
    gc.set_threshold(young, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def _prep(config: Config, output_dir: Path, tokenizer: Tokenizer) -> PrepResult:
    """`run_prep` once the output directory is checked and the tokenizer loaded."""
    data = config.data
    splits, labels, streams = load_splits(config)
    log.info(
        "Tokenizing %s rows (max_length %d)",
        ", ".join(f"{len(rows):,} {name}" for name, rows in splits.items()),
        data.max_length,
    )
    task = get_task(data.task)
    digests = {role: stream.digest for role, stream in streams.items()}
    identity = prep_identity(config, digests, tokenizer_digest(tokenizer), template_digest(config))
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
                    splits[name],
                    tokens[name],
                    labels if task.labelled else None,
                    data.max_length,
                    task,
                )
                for name in splits
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
        for role in INPUTS
        if (source := getattr(data, role)) is not None
    }
    tokenizer = tokenizer_digest(load_tokenizer(config.model))
    identity = prep_identity(config, digests, tokenizer, template_digest(config))
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
    completes = task.ends_completions and data.completion_column is not None
    eos_id = end_of_text_id(config.model) if completes else None
    chats = ChatRenderer(config.model, data) if data.messages_column is not None else None
    writers = {
        name: ShardWriter(staging / name, tokenizer, task, labels, data,
                          splits[name].pair_column is not None, eos_id, chats)
        for name in splits
    }  # fmt: skip
    for stream in streams.values():
        mine = {name: rows for name, rows in splits.items() if rows.source == stream.source}
        if mine:
            write_rows(stream, mine, writers)
    counts = {name: writer.close() for name, writer in writers.items()}
    for name, split in counts.items():
        if split.trimmed_prompts:
            log.warning(
                "%s: %d rows over data.max_length=%d lost prompt text from the left; %d of them "
                "had their completion cut even so (raise data.max_length to keep them whole)",
                name, split.trimmed_prompts, data.max_length, split.cut_completions,
            )  # fmt: skip
    return counts


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
