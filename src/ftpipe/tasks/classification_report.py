"""The sequence-classification section of the evaluation report.

Accuracy, macro-F1, per-class precision, recall and F1, the expected calibration error and log
loss from held-out probabilities, the confusion matrix as a PNG, and for the run report the
reliability diagram's bins and the most confident errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

RELIABILITY = "reliability.json"
"""Rows, correct rows and summed confidence per confidence bin (the reliability diagram)."""

ERRORS = "errors.jsonl"
"""The most confident wrong predictions, most confident first: one JSON object per line."""


def classification_report(
    probs: np.ndarray, labels: np.ndarray, names: tuple[str, ...], bins: int = 15
) -> dict[str, float]:
    """Accuracy, macro-F1, per-class precision/recall/F1, ECE and log loss."""
    from sklearn.metrics import precision_recall_fscore_support

    predicted = probs.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=np.arange(len(names)), zero_division=0
    )
    picked = probs[np.arange(len(labels)), labels]
    metrics = {
        "accuracy": float((predicted == labels).mean()),
        "macro_f1": float(f1.mean()),
        "ece": expected_calibration_error(probs, labels, bins),
        "loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
    }
    for i, name in enumerate(names):
        metrics |= {
            f"precision/{name}": float(precision[i]),
            f"recall/{name}": float(recall[i]),
            f"f1/{name}": float(f1[i]),
        }
    return metrics


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the row-weighted gap between confidence and accuracy over equal-width bins.

    Confidence is the top class's probability; bin edges are closed on the right, so a
    confidence of exactly 1.0 lands in the last bin.
    """
    counts, correct, confidence = reliability_bins(
        probs.max(axis=1), probs.argmax(axis=1) == labels, bins
    )
    return float(np.abs(correct - confidence).sum() / max(counts.sum(), 1))


def ece_noise_floor(
    confidence: np.ndarray, bins: int = 15, draws: int = 200, seed: int = 0
) -> float:
    """The ECE a perfectly calibrated model with these confidences shows, on average, here.

    On few rows the ECE is biased upwards: each bin's accuracy is a sample, and its gap to
    the bin's confidence is counted whatever its sign. This is that bias for these rows and
    confidences: in each of `draws` seeded draws every row is correct with probability its
    confidence (calibration by construction), and the draws' ECEs are averaged. An ECE near
    it is as calibrated as this split can show.
    """
    rows = len(confidence)
    if rows == 0:
        return 0.0
    which = confidence_bins(confidence, bins)
    expected = np.bincount(which, weights=confidence, minlength=bins)
    rng = np.random.default_rng(seed)
    total, chunk = 0.0, max(1, min(draws, 4_000_000 // rows))  # bounded memory per chunk
    for start in range(0, draws, chunk):
        k = min(chunk, draws - start)
        correct = rng.random((k, rows)) < confidence
        slots = (np.arange(k)[:, None] * bins + which).ravel()  # one set of bins per draw
        hits = np.bincount(slots, weights=correct.ravel(), minlength=k * bins).reshape(k, bins)
        total += float(np.abs(hits - expected).sum()) / rows
    return total / draws


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: rows, correct rows, and the sum of their confidences.

    The ECE and the reliability diagram share these bins, so the diagram shows the gaps the
    ECE adds up.
    """
    which = confidence_bins(confidence, bins)
    return (
        np.bincount(which, minlength=bins),
        np.bincount(which, weights=correct.astype(np.float64), minlength=bins),
        np.bincount(which, weights=confidence, minlength=bins),
    )


def confidence_bins(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Each row's equal-width bin, edges closed on the right (1.0 lands in the last bin)."""
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def write_report_files(frame: pd.DataFrame, output_dir: Path, bins: int, limit: int = 20) -> None:
    """The report's evidence beyond the metrics: `RELIABILITY` and `ERRORS`.

    Args:
        frame: The held-out predictions (text, label, predicted, correct, confidence, ...).
        output_dir: Where the files go.
        bins: Equal-width confidence bins of the reliability diagram (as of the ECE).
        limit: How many of the most confident errors `ERRORS` lists.
    """
    counts, correct, confidence = reliability_bins(
        frame["confidence"].to_numpy(), frame["correct"].to_numpy(), bins
    )
    reliability = {"bins": bins, "rows": counts.tolist(), "correct": correct.tolist(),
                   "confidence": confidence.tolist()}  # fmt: skip
    (output_dir / RELIABILITY).write_text(json.dumps(reliability) + "\n")
    columns = [c for c in ("row", "text", "text_pair", "label", "predicted", "confidence")
               if c in frame]  # fmt: skip
    wrong = frame[~frame["correct"]].sort_values("confidence", ascending=False, kind="stable")
    wrong[columns].head(limit).to_json(output_dir / ERRORS, orient="records", lines=True)


def confusion_png(
    labels: np.ndarray, predicted: np.ndarray, names: tuple[str, ...], path: Path
) -> Path:
    """Draw the confusion matrix of class ids (counts; colour by share of the true class)."""
    classes = len(names)
    matrix = np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(
        classes, classes
    )
    return matrix_png(matrix, names, path)


def matrix_png(
    matrix: np.ndarray,
    names: tuple[str, ...],
    path: Path,
    title: str = "Confusion matrix",
    unit: str = "rows",
) -> Path:
    """Draw a [true, predicted] count matrix to a PNG, coloured by share of the true row."""
    from matplotlib.figure import Figure

    classes = len(names)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = min(2.0 + 0.6 * classes, 30.0)
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of true class")
    axes.set_xticks(range(classes), names, rotation=45, ha="right")
    axes.set_yticks(range(classes), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if classes <= 30:  # beyond that the numbers are unreadable; the colours still tell
        for (i, j), count in np.ndenumerate(matrix):
            colour = "white" if shares[i, j] > 0.5 else "black"
            axes.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=8)
    axes.set_title(f"{title} ({int(matrix.sum())} {unit})")
    figure.savefig(path, dpi=100)
    return path
