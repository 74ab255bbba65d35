"""The paired bootstrap's resampling: every model scored on the same drawn rows.

Three kinds of per-row evidence are resampled (`ftpipe.registry.gate.Scored`):

* labelled rows (classifiers): a sample's accuracy or macro-F1 comes from its confusion
  matrix, for all samples at once from one `bincount` over (sample, label, prediction) codes;
* rows with additive counts: entity span counts per sentence (named entities), or a
  (numerator, denominator) pair per row (a causal LM's summed token loss and target tokens,
  or a generated row's exact match or ROUGE-L over 1). A sample's counts are its rows' counts
  summed, with a row drawn twice counted twice: `W @ counts` for all samples of a chunk at
  once, W[sample, row] how often the sample drew the row. The metric is a function of the
  summed counts (`span_f1`, or numerator / denominator).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

_CHUNK_CELLS = 4_000_000
"""Row indices drawn per chunk of bootstrap samples (bounds each chunk's arrays at ~32 MB)."""


def _resamples(n: int, samples: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first sample, drawn row indices [k, n]) per chunk: every bootstrap draws rows here."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, samples, chunk):
        yield start, rng.integers(0, n, size=(min(chunk, samples - start), n))


def label_bootstrap(
    labels: np.ndarray,
    predictions: list[np.ndarray],
    classes: int,
    value: Callable[[np.ndarray], np.ndarray],
    samples: int,
    seed: int,
) -> np.ndarray:
    """`value` of each model's confusion matrix on each bootstrap sample: [samples, models].

    Args:
        labels: True label ids per row.
        predictions: Each model's predicted ids, on the same rows.
        classes: Number of classes.
        value: The metric of confusion matrices [k, C, C] -> [k].
        samples: Bootstrap samples.
        seed: Seed of the resampling.
    """
    codes = [labels.astype(np.int64) * classes + p.astype(np.int64) for p in predictions]
    cells = classes * classes
    out = np.empty((samples, len(predictions)))
    for start, rows in _resamples(len(labels), samples, seed):
        k = len(rows)
        offsets = (np.arange(k) * cells)[:, None]
        for m, code in enumerate(codes):
            counts = np.bincount((code[rows] + offsets).ravel(), minlength=k * cells)
            out[start : start + k, m] = value(counts.reshape(k, classes, classes))
    return out


def count_bootstrap(
    tables: list[np.ndarray],
    value: Callable[[np.ndarray], np.ndarray],
    samples: int,
    seed: int,
) -> np.ndarray:
    """`value` of each model's summed row counts on each bootstrap sample: [samples, models].

    Args:
        tables: Each model's counts [rows, c], on the same rows in order.
        value: The metric of summed counts [k, c] -> [k].
        samples: Bootstrap samples.
        seed: Seed of the resampling.
    """
    n = len(tables[0])
    tables = [np.asarray(t, dtype=np.float64) for t in tables]
    out = np.empty((samples, len(tables)))
    for start, rows in _resamples(n, samples, seed):
        k = len(rows)
        rows += (np.arange(k) * n)[:, None]  # (sample, row) codes, in place
        # W[sample, row]: how often the sample drew the row (float: BLAS matmul).
        weights = np.bincount(rows.ravel(), minlength=k * n).reshape(k, n).astype(np.float64)
        for m, table in enumerate(tables):
            out[start : start + k, m] = value(weights @ table)
    return out


def ratio(sums: np.ndarray) -> np.ndarray:
    """Numerator over denominator of summed (numerator, denominator) pairs [..., 2]; 0 at 0/0."""
    top, bottom = np.moveaxis(np.asarray(sums, dtype=np.float64), -1, 0)
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)
