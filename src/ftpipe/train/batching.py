"""Which rows each rank reads, in which order, and how rows become tensors.

Each epoch's order is a pure function of (seed, epoch, world size, rows per step,
`train.group_by_length`), so the data position of a checkpoint is just its step: a resumed run
recomputes the order and skips to where it stopped, and reads exactly the batches an
uninterrupted run would have read. (A resume with other settings reads another order.) With
`data.packing` each micro-batch's rows are packed after the task has built their targets
(train/packing.py); the packing is a pure function of those rows, so the same holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ftpipe.data.features import token_starts
from ftpipe.data.prepared import Split, batches
from ftpipe.tasks import Task
from ftpipe.train.packing import Packer, Padding, padding_share

POOL_STEPS = 64
"""With `group_by_length`, rows are sorted by length within pools of this many steps."""


def rank_order(
    lengths: np.ndarray,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    per_rank: int,
    group_by_length: bool = False,
) -> np.ndarray:
    """This rank's rows for one epoch, `per_rank` per step, in the order it reads them.

    A seeded shuffle is cut into steps of `per_rank x world_size` rows. Within a step the rows
    are sorted by length and dealt round-robin, so every rank gets a like share of long and
    short rows (no rank waits long for the others at the gradient all-reduce), and each
    micro-batch, a run of consecutive rows, holds rows of similar length (little of a padded
    batch is padding). A step's rows are still the shuffle's; only which rank reads which, and
    with which, differs. A classifier's step gradient (a mean over rows) is therefore
    unchanged; a language model's loss is a mean over each micro-batch's tokens, so its rows
    are weighted a little differently. The rows past the last whole step are left out this epoch
    (the next shuffle puts others there).

    Args:
        lengths: Token count of every row of the split.
        seed: The run's seed.
        epoch: The epoch (each gets its own shuffle).
        rank: This rank.
        world_size: Number of ranks.
        per_rank: Rows each rank reads per optimizer step (micro-batch x accumulation).
        group_by_length: Sort the shuffle by length within pools of `POOL_STEPS` steps, then
            shuffle the steps, so each step holds rows of similar length (little padding).
    """
    rng = np.random.default_rng([seed, epoch])
    step = per_rank * world_size
    # The rows past the last whole step are cut from the shuffle first, so the ones left out
    # are random, never the longest of a sorted pool.
    order = rng.permutation(len(lengths))[: len(lengths) // step * step]
    if group_by_length:
        pool = step * POOL_STEPS
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            order[start : start + pool] = chunk[np.argsort(lengths[chunk], kind="stable")]
    steps = order.reshape(-1, step)
    if group_by_length:  # else every epoch would run from short steps to long ones
        steps = steps[rng.permutation(len(steps))]
    by_length = np.take_along_axis(steps, np.argsort(lengths[steps], axis=1, kind="stable"), 1)
    return by_length[:, rank::world_size].reshape(-1)


def epoch_padding(
    lengths: np.ndarray,
    seed: int,
    world_size: int,
    per_rank: int,
    micro: int,
    group_by_length: bool,
    capacity: int,
) -> Padding:
    """The share of computed tokens that are padding in the first epoch, packed and unpacked.

    Over every rank's micro-batches, so every rank computes the same figures.

    Args:
        lengths: Token count of every row of the training split.
        seed: The run's seed.
        world_size: Number of ranks.
        per_rank: Rows each rank reads per optimizer step.
        micro: Rows per micro-batch.
        group_by_length: `train.group_by_length`.
        capacity: Tokens per packed sequence.
    """
    orders = [
        rank_order(lengths, seed, 0, rank, world_size, per_rank, group_by_length)
        for rank in range(world_size)
    ]
    micro_batches = np.concatenate(orders).reshape(-1, micro)
    return Padding(
        packed=padding_share(lengths, micro_batches, capacity),
        unpacked=padding_share(lengths, micro_batches),
    )


def eval_shard(rows: int, rank: int, world_size: int) -> tuple[np.ndarray, int]:
    """This rank's evaluation rows, padded to an equal count on every rank.

    Returns the rows and how many of them are this rank's own; the rest are repeats that the
    caller must not count.
    Under ZeRO-3 every forward pass gathers weights collectively, so all ranks must run the
    same number of batches.
    """
    mine = np.arange(rank, rows, world_size)
    width = -(-rows // world_size)
    padding = np.zeros(width - len(mine), dtype=mine.dtype)  # row 0, scored and discarded
    return np.concatenate([mine, padding]), len(mine)


@dataclass(frozen=True)
class BatchSource:
    """Turns row indices into model inputs and the task's targets.

    Inputs are padded token tensors, or cached features for feature extraction.

    Attributes:
        split: The rows.
        pad_id: Padding token id.
        task: The task, which builds each batch's `labels`.
        features: Cached features for feature extraction: pooled, [rows, hidden], or with
            `per_token` every token's, row after row, [tokens, hidden].
        per_token: `features` holds a vector per token; batches pad them to [rows, tokens,
            hidden] with zeros, as token ids are padded.
        packer: Packs each batch's rows after their targets are built (`data.packing`).
    """

    split: Split
    pad_id: int
    task: Task
    features: torch.Tensor | None = None
    per_token: bool = False
    packer: Packer | None = None

    def batch(self, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """Tensors for these rows, on `device`."""
        if self.features is None:
            _, tensors = next(batches(self.split, len(rows), self.pad_id, rows))
        elif self.per_token:
            tensors = {"features": self._padded_token_features(rows)}
        else:
            tensors = {"features": self.features[torch.from_numpy(rows)]}
        tensors["labels"] = self.task.targets(self.split, rows, tensors)
        if self.packer is not None:
            tensors = self.packer.pack(tensors, self._lengths[rows])
        return {name: value.to(device, non_blocking=True) for name, value in tensors.items()}

    def tokens(self, rows: np.ndarray) -> int:
        """The real (not padding) tokens of these rows; 0 for cached features."""
        return int(self._lengths[rows].sum()) if self.features is None else 0

    def head_matrix(
        self, device: torch.device, chunk: int = 1024
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every cached feature that has a target, and the target: what a head fit reads.

        Pooled, that is every row; per token, every token whose label is not -100.

        Returns:
            Features [n, hidden] and labels [n].
        """
        features, labels = [], []
        for start in range(0, len(self.split), chunk):
            batch = self.batch(np.arange(start, min(start + chunk, len(self.split))), device)
            scored = batch["labels"] != -100
            features.append(batch["features"][scored])
            labels.append(batch["labels"][scored])
        return torch.cat(features), torch.cat(labels)

    @cached_property
    def _lengths(self) -> np.ndarray:
        return self.split.lengths

    @cached_property
    def _starts(self) -> np.ndarray:
        return token_starts(self.split)

    def _padded_token_features(self, rows: np.ndarray) -> torch.Tensor:
        assert self.features is not None
        starts, ends = self._starts[rows], self._starts[rows + 1]
        padded = self.features.new_zeros(
            (len(rows), int((ends - starts).max()), self.features.shape[1])
        )
        for j, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            padded[j, : end - start] = self.features[start:end]
        return padded
