"""Prep's outputs: their layout (`PrepDir`), the rows per split, and padded batches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from ftpipe.artifacts import localize
from ftpipe.errors import DataError
from ftpipe.tasks import LabelMap, Task, get_task, pad_rows


@dataclass(frozen=True)
class Split:
    """One prepared split: variable-length token ids, optional token types, label ids.

    Unlabelled tasks leave `labels` unused; `prompt_lengths`, when present, says how many
    leading tokens of each row are prompt (kept out of a language model's loss).
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray
    prompt_lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Token count of every row."""
        return np.fromiter(map(len, self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def concat(self, other: Split) -> Split:
        """These rows followed by `other`'s."""
        types = None
        if self.token_type_ids is not None and other.token_type_ids is not None:
            types = self.token_type_ids + other.token_type_ids
        prompts = None
        if self.prompt_lengths is not None and other.prompt_lengths is not None:
            prompts = np.concatenate([self.prompt_lengths, other.prompt_lengths])
        labels = np.concatenate([self.labels, other.labels])
        return Split(self.input_ids + other.input_ids, types, labels, prompts)

    def subset(self, rows: np.ndarray) -> Split:
        """The rows at the given indices."""
        types = self.token_type_ids
        return Split(
            [self.input_ids[i] for i in rows],
            None if types is None else [types[i] for i in rows],
            self.labels[rows],
            None if self.prompt_lengths is None else self.prompt_lengths[rows],
        )


@dataclass(frozen=True)
class PrepDir:
    """A prep output directory: the one place that knows its layout.

    prep writes it; recommend, train, tune, evaluate and tracking read it through this class,
    so none of them spells a file name or guesses the task from which files exist.
    """

    path: Path

    @classmethod
    def open(cls, directory: str | Path) -> PrepDir:
        """A complete prep output (on a cluster `directory` may be an object-storage URI).

        Raises:
            DataError: If the directory is not a complete prep output.
        """
        prep = cls(localize(directory))
        if not prep.fingerprint_path.exists():
            raise DataError(
                f"{prep.path} is not a prep output (no fingerprint.json). Run `ftpipe prep` with "
                "the same config first."
            )
        return prep

    @property
    def label_map_path(self) -> Path:
        """label_map.json: id2label / label2id (labelled tasks only)."""
        return self.path / "label_map.json"

    @property
    def stats_path(self) -> Path:
        """stats.json: rows per split and label, drops, token lengths, shift signals."""
        return self.path / "stats.json"

    @property
    def fingerprint_path(self) -> Path:
        """fingerprint.json: the fingerprint and everything it covers."""
        return self.path / "fingerprint.json"

    def split_path(self, name: str) -> Path:
        """The Parquet shards of a split (`train` or `eval`)."""
        return self.path / name

    @cached_property
    def stats(self) -> dict[str, Any]:
        """The statistics prep computed."""
        return json.loads(self.stats_path.read_text())

    @property
    def task(self) -> Task:
        """The task the data was prepared for."""
        return get_task(self.stats["task"])

    @property
    def labels(self) -> LabelMap | None:
        """The label map, for labelled tasks."""
        return LabelMap.load(self.label_map_path) if self.task.labelled else None

    @property
    def fingerprint(self) -> str:
        """The data fingerprint."""
        return json.loads(self.fingerprint_path.read_text())["fingerprint"]

    @property
    def rows(self) -> dict[str, int]:
        """Rows per split."""
        return {name: split["rows"] for name, split in self.stats["splits"].items()}


@dataclass(frozen=True)
class PreparedData:
    """Everything prep wrote that training needs (`labels` is None for unlabelled tasks)."""

    splits: dict[str, Split]
    labels: LabelMap | None
    fingerprint: str
    stats: dict
    task: Task


def load_prepared(directory: str | Path) -> PreparedData:
    """Load a prep output directory.

    Raises:
        DataError: If the directory is not a complete prep output.
    """
    prep = PrepDir.open(directory)
    splits = {}
    for name in ("train", "eval"):
        table = pq.read_table(prep.split_path(name))
        columns = table.column_names
        splits[name] = Split(
            input_ids=table.column("input_ids").to_pylist(),
            token_type_ids=(
                table.column("token_type_ids").to_pylist() if "token_type_ids" in columns else None
            ),
            labels=table.column("label").to_numpy().astype(np.int64),
            prompt_lengths=(
                table.column("prompt_length").to_numpy().astype(np.int64)
                if "prompt_length" in columns
                else None
            ),
        )
    return PreparedData(splits, prep.labels, prep.fingerprint, prep.stats, prep.task)


def batches(
    split: Split, batch_size: int, pad_id: int, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield (row indices, input tensors) padded to each batch's longest row.

    Args:
        split: The rows.
        batch_size: Rows per batch.
        pad_id: Token id used for padding (masked out by attention_mask).
        order: Row order; defaults to the stored order.
    """
    order = np.arange(len(split)) if order is None else order
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = pad_rows([split.input_ids[i] for i in rows], pad_id)
        tensors = {"input_ids": ids, "attention_mask": mask}
        if split.token_type_ids is not None:
            tensors["token_type_ids"] = pad_rows([split.token_type_ids[i] for i in rows], 0)[0]
        yield rows, tensors
