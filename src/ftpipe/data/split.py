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
    """Hold out `fraction` of each class, chosen by a seeded shuffle.

    Rows that share a group (for example copies of one text) move together, so the same text
    never lands on both sides. Every class with at least two groups keeps at least one on each
    side, so a rare class is both trained on and evaluated. The same inputs always give the
    same split.

    Returns:
        Sorted train indices and sorted eval indices.
    """
    members: dict[Hashable, list[int]] = {}
    for row, group in enumerate(groups if groups is not None else range(len(labels))):
        members.setdefault(group, []).append(row)
    units = list(members.values())  # in order of first appearance, so the result is stable
    unit_labels = np.array([labels[unit[0]] for unit in units])
    rng = np.random.default_rng(seed)
    held_out: list[int] = []
    for label in np.unique(unit_labels):
        chosen = rng.permutation(np.flatnonzero(unit_labels == label))
        n_eval = round(fraction * len(chosen))
        if len(chosen) >= 2:
            n_eval = min(max(n_eval, 1), len(chosen) - 1)
        held_out.extend(row for unit in chosen[:n_eval] for row in units[unit])
    eval_rows = set(held_out)
    return [r for r in range(len(labels)) if r not in eval_rows], sorted(eval_rows)
