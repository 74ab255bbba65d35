"""A deterministic, stratified, seeded train/eval split."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out `fraction` of each class, chosen by a seeded shuffle.

    Every class with at least two rows keeps at least one row on each side, so a rare class
    is both trained on and evaluated. The same labels, fraction and seed always give the
    same split.

    Returns:
        Sorted train indices and sorted eval indices.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    held_out: list[np.ndarray] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_eval = round(fraction * len(members))
        if len(members) >= 2:
            n_eval = min(max(n_eval, 1), len(members) - 1)
        held_out.append(members[:n_eval])
    eval_idx = np.sort(np.concatenate(held_out)) if held_out else np.array([], dtype=int)
    mask = np.ones(len(y), dtype=bool)
    mask[eval_idx] = False
    return np.flatnonzero(mask).tolist(), eval_idx.tolist()
