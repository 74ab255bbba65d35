"""`ftpipe evaluate`: score a model on the held-out split, per class, with calibration.

It writes, under `evaluate.output_dir`:

* `metrics.json`: accuracy, macro-F1, per-class precision/recall/F1, the expected calibration
  error (ECE, `evaluate.calibration_bins` equal-width bins), log loss, p95 single-row latency
  and the model's size on disk;
* `predictions.parquet`: one row per held-out example (row, text, label, predicted, correct,
  confidence, a probability per class), which the promotion gate's paired bootstrap reads;
* `confusion_matrix.png`;
* `evaluation.json`: the summary the registry attaches to a model version.

The held-out set is identified by a fingerprint of its rows (texts and label names, in order),
not of how they were tokenized, so models with different tokenizers or label orders are still
compared on the same set, and sets that differ are never compared. Nothing here imports MLflow;
the CLI logs the results through `ftpipe.registry`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ftpipe.artifacts import localize
from ftpipe.config.schema import canonical_json
from ftpipe.data.labels import LabelMap
from ftpipe.errors import DataError
from ftpipe.predict import PROB_PREFIX

if TYPE_CHECKING:
    from ftpipe.predict import Predictor

PREDICTIONS = "predictions.parquet"
CONFUSION = "confusion_matrix.png"
METRICS = "metrics.json"
SUMMARY = "evaluation.json"


@dataclass(frozen=True)
class HeldOut:
    """The held-out rows: texts, optional second texts, label names, and their fingerprint."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[str]
    fingerprint: str


@dataclass
class Evaluation:
    """What `evaluate` measured and where it wrote it.

    Attributes:
        model: The model reference evaluated (directory or registry URI).
        fingerprint: The held-out set's fingerprint.
        rows: Held-out rows.
        metrics: Every scalar metric, by name.
        output_dir: Where the files are.
        run_id: The MLflow run the results were logged to, once logged.
    """

    model: str
    fingerprint: str
    rows: int
    metrics: dict[str, float]
    output_dir: str
    run_id: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def save(self) -> Path:
        """Write evaluation.json and return its path."""
        path = Path(self.output_dir) / SUMMARY
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Evaluation:
        """Read an evaluation.json.

        Raises:
            DataError: If the file is missing.
        """
        path = Path(path)
        if path.is_dir():
            path = path / SUMMARY
        if not path.is_file():
            raise DataError(
                f"No evaluation at {path}. Run `ftpipe evaluate` first (it writes "
                f"evaluate.output_dir/{SUMMARY})."
            )
        return cls(**json.loads(path.read_text()))


def load_heldout(prep_dir: str | Path) -> HeldOut:
    """The eval split prep wrote, as raw texts and label names.

    Raises:
        DataError: If prep has not run, or was for language modelling.
    """
    import pyarrow.parquet as pq

    prep_dir = localize(prep_dir)
    if not (prep_dir / "label_map.json").is_file():
        raise DataError(
            f"{prep_dir} holds no classification prep output (no label_map.json). Run "
            "`ftpipe prep` with the same config (data.output_dir) first."
        )
    names = LabelMap.load(prep_dir / "label_map.json").names
    table = pq.read_table(prep_dir / "eval", columns=None)
    texts = table.column("text").to_pylist()
    pairs = table.column("text_pair").to_pylist() if "text_pair" in table.column_names else None
    labels = [names[i] for i in table.column("label").to_pylist()]
    return HeldOut(texts, pairs, labels, heldout_fingerprint(texts, pairs, labels))


def heldout_fingerprint(texts: list[str], pairs: list[str] | None, labels: list[str]) -> str:
    """sha256 over the ordered rows (text, second text, label name)."""
    rows = [texts, pairs if pairs is not None else [], labels]
    return hashlib.sha256(canonical_json(rows).encode("utf-8")).hexdigest()


def evaluate_model(
    predictor: Predictor,
    heldout: HeldOut,
    output_dir: str | Path,
    model_ref: str,
    calibration_bins: int = 15,
    latency_rows: int = 32,
) -> Evaluation:
    """Score `predictor` on `heldout` and write every output file; see module docstring.

    Raises:
        DataError: If the held-out set has labels the model does not know.
    """
    names = predictor.names
    unknown = sorted(set(heldout.labels) - set(names))
    if unknown:
        raise DataError(
            f"The held-out set has labels the model {model_ref} was not trained on: "
            f"{', '.join(unknown[:5])}. Evaluate on data with the model's label set "
            f"({', '.join(names[:10])})."
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    probs = predictor.probabilities(heldout.texts, heldout.pairs)
    ids = {name: i for i, name in enumerate(names)}
    labels = np.array([ids[name] for name in heldout.labels], dtype=np.int64)
    metrics = classification_report(probs, labels, names, calibration_bins)
    latency = single_row_latency(predictor, heldout, latency_rows)
    if latency is not None:
        metrics["latency_p95_ms"] = latency
    metrics["size_mb"] = model_size_mb(predictor.directory, predictor.manifest)
    metrics["rows"] = float(len(labels))

    predictions = predictions_frame(heldout, probs, labels, names)
    predictions.to_parquet(output_dir / PREDICTIONS, index=False)
    confusion_png(labels, probs.argmax(axis=1), names, output_dir / CONFUSION)
    (output_dir / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    evaluation = Evaluation(
        model=model_ref,
        fingerprint=heldout.fingerprint,
        rows=len(labels),
        metrics=metrics,
        output_dir=str(output_dir),
        files={k: str(output_dir / v) for k, v in
               (("predictions", PREDICTIONS), ("confusion", CONFUSION), ("metrics", METRICS))},
    )  # fmt: skip
    evaluation.save()
    return evaluation


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
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    gap = np.abs(
        np.bincount(which, weights=correct, minlength=bins)
        - np.bincount(which, weights=confidence, minlength=bins)
    )
    return float(gap.sum() / max(counts.sum(), 1))


def predictions_frame(
    heldout: HeldOut, probs: np.ndarray, labels: np.ndarray, names: tuple[str, ...]
) -> pd.DataFrame:
    """One row per example: what the gate's paired bootstrap and error analysis need."""
    predicted = probs.argmax(axis=1)
    frame = pd.DataFrame({"row": np.arange(len(labels)), "text": heldout.texts})
    if heldout.pairs is not None:
        frame["text_pair"] = heldout.pairs
    frame["label"] = heldout.labels
    frame["predicted"] = np.asarray(names, dtype=object)[predicted]
    frame["correct"] = predicted == labels
    frame["confidence"] = probs.max(axis=1).astype(np.float64)
    for i, name in enumerate(names):
        frame[PROB_PREFIX + name] = probs[:, i].astype(np.float64)
    return frame


def single_row_latency(predictor: Predictor, heldout: HeldOut, rows: int) -> float | None:
    """p95 milliseconds of one-row requests on this machine (after one warm-up); None for 0."""
    if rows == 0 or not heldout.texts:
        return None

    def one(i: int) -> None:
        i %= len(heldout.texts)
        predictor.probabilities([heldout.texts[i]], heldout.pairs and [heldout.pairs[i]])

    one(0)
    timings = []
    for i in range(rows):
        started = time.perf_counter()
        one(i)
        timings.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(timings, 95))


def model_size_mb(directory: Path, manifest: dict[str, Any]) -> float:
    """Megabytes on disk a server loads: the export, plus a local base model under an adapter."""
    from ftpipe.hub import resolve_model

    paths = [Path(directory)]
    if manifest.get("kind") == "peft":
        base = Path(resolve_model(manifest["base_model"]))
        if base.is_dir():
            paths.append(base)
    total = sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file())
    return total / 1e6


def confusion_png(
    labels: np.ndarray, predicted: np.ndarray, names: tuple[str, ...], path: Path
) -> Path:
    """Draw the confusion matrix (counts; colour by share of the true class) to a PNG."""
    from matplotlib.figure import Figure

    classes = len(names)
    matrix = np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(
        classes, classes
    )
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
    axes.set_title(f"Confusion matrix ({int(matrix.sum())} rows)")
    figure.savefig(path, dpi=100)
    return path
