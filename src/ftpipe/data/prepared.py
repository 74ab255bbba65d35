"""Read prep's outputs back: token ids and labels per split, served as padded batches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from ftpipe.artifacts import localize
from ftpipe.data.labels import LabelMap
from ftpipe.errors import DataError


@dataclass(frozen=True)
class Split:
    """One prepared split: variable-length token ids, optional token types, label ids.

    For causal language modelling `labels` is unused and `prompt_lengths`, when present, says
    how many leading tokens of each row are prompt (kept out of the loss).
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
class PreparedData:
    """Everything prep wrote that later stages need (`labels` is None for causal LM)."""

    splits: dict[str, Split]
    labels: LabelMap | None
    fingerprint: str
    stats: dict


def load_prepared(directory: str | Path) -> PreparedData:
    """Load a prep output directory.

    Raises:
        DataError: If the directory is not a complete prep output.
    """
    directory = localize(directory)  # on a cluster: the artifact's object-storage URI
    if not (directory / "fingerprint.json").exists():
        raise DataError(
            f"{directory} is not a prep output (no fingerprint.json). Run `ftpipe prep` with the "
            "same config first."
        )
    splits = {}
    for name in ("train", "eval"):
        table = pq.read_table(directory / name)
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
    label_map = directory / "label_map.json"
    return PreparedData(
        splits=splits,
        labels=LabelMap.load(label_map) if label_map.exists() else None,
        fingerprint=json.loads((directory / "fingerprint.json").read_text())["fingerprint"],
        stats=json.loads((directory / "stats.json").read_text()),
    )


def batches(
    split: Split, batch_size: int, pad_id: int, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield (row indices, tensors) padded to each batch's longest row.

    Args:
        split: The rows.
        batch_size: Rows per batch.
        pad_id: Token id used for padding (masked out by attention_mask).
        order: Row order; defaults to the stored order.
    """
    order = np.arange(len(split)) if order is None else order
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(split.input_ids[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        types = None if split.token_type_ids is None else torch.zeros_like(ids)
        for j, i in enumerate(rows):
            length = len(split.input_ids[i])
            ids[j, :length] = torch.tensor(split.input_ids[i])
            mask[j, :length] = 1
            if types is not None:
                types[j, :length] = torch.tensor(split.token_type_ids[i])
        tensors = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.from_numpy(split.labels[rows]),
        }
        if types is not None:
            tensors["token_type_ids"] = types
        yield rows, tensors
