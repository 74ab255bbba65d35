"""A deterministic, stratified, seeded train/eval split."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def stratified_split(
    labels: Sequence[int],
    fraction: float,
    seed: int,
    groups: Sequence[Hashable] | None = None,
) -> tuple[list[int], list[int]]:
    """Hold out `fraction` of each class, chosen by a seeded shuffle (lists; see `split_rows`).

    Returns:
        Sorted train indices and sorted eval indices.
    """
    ids = None
    if groups is not None:
        first: dict[Hashable, int] = {}
        ids = np.array([first.setdefault(g, len(first)) for g in groups], dtype=np.int64)
    train, held_out = split_rows(np.asarray(labels, dtype=np.int64), fraction, seed, ids)
    return train.tolist(), held_out.tolist()


def split_rows(
    labels: np.ndarray, fraction: float, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out `fraction` of each class, chosen by a seeded shuffle.

    Rows that share a group (for example copies of one text) move together, so the same text
    never lands on both sides. Every class with at least two groups keeps at least one on each
    side, so a rare class is both trained on and evaluated. The same inputs always give the
    same split.

    Args:
        labels: Each row's label id.
        fraction: Share of each class's groups to hold out.
        seed: Seed of the shuffle.
        groups: Each row's group, any values numpy can sort (row keys, ids); None puts every
            row in a group of its own.

    Returns:
        Sorted train indices and sorted eval indices (int64 arrays).
    """
    n = len(labels)
    if groups is None:
        first_rows, unit_of = np.arange(n), np.arange(n)
    else:
        # Units in order of first appearance, so the result does not depend on group values.
        _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        first_rows, unit_of = first[order], rank[inverse.reshape(-1)]
    unit_labels = labels[first_rows]
    rng = np.random.default_rng(seed)
    held_units: list[np.ndarray] = []
    for label in np.unique(unit_labels):
        chosen = rng.permutation(np.flatnonzero(unit_labels == label))
        n_eval = round(fraction * len(chosen))
        if len(chosen) >= 2:
            n_eval = min(max(n_eval, 1), len(chosen) - 1)
        held_units.append(chosen[:n_eval])
    held = np.zeros(len(first_rows), dtype=bool)
    if held_units:
        held[np.concatenate(held_units)] = True
    in_eval = held[unit_of]
    return np.flatnonzero(~in_eval), np.flatnonzero(in_eval)
