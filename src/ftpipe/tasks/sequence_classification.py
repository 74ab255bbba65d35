"""`data.task: sequence-classification`: a text, or a pair of texts, and one class label.

The model is `AutoModelForSequenceClassification` with a new head sized to the label map.
Metrics: loss, accuracy, macro-F1 and F1 per class, and the temperature scaling fit on the eval
logits with the calibration before and after it; checkpoints are selected by macro-F1.
Serving returns the top label and one probability column per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ftpipe.tasks.base import (
    CONFUSION,
    Evaluator,
    HeldOutRows,
    Problem,
    Rows,
    RowView,
    ServingTask,
    Tokens,
)
from ftpipe.tasks.calibration import calibration_metrics, fit_temperature, log_loss, softmax
from ftpipe.tasks.classification_report import (
    classification_report,
    confusion_png,
    ece_noise_floor,
    write_report_files,
)
from ftpipe.tasks.labels import LabelMap

PROB_PREFIX = "prob_"
"""Column prefix of the per-class probabilities in predictions."""


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...]
) -> dict[str, float]:
    """Loss, accuracy, macro-F1 and `f1/<class>` for every class (classes absent count 0).

    Also the temperature fit on these logits (`ftpipe.tasks.calibration`), with the ECE and
    log loss before and after it: the export stores that temperature.
    """
    from sklearn.metrics import f1_score

    predicted = logits.argmax(axis=1)
    per_class = f1_score(
        labels, predicted, labels=np.arange(len(names)), average=None, zero_division=0
    )
    return {
        "loss": log_loss(logits, labels),
        "accuracy": float((predicted == labels).mean()),
        "macro_f1": float(per_class.mean()),
        **{f"f1/{name}": float(score) for name, score in zip(names, per_class, strict=True)},
        **calibration_metrics(logits, labels, fit_temperature(logits, labels)),
    }


class _LogitsEvaluator:
    """Keeps each row's logits; the ranks gather them and score the whole split in order."""

    def __init__(self, labels: np.ndarray, names: tuple[str, ...]) -> None:
        self.labels, self.names = labels, names
        self.rows: list[np.ndarray] = []
        self.logits: list[np.ndarray] = []

    def update(
        self, logits: torch.Tensor, targets: torch.Tensor, rows: np.ndarray, own: np.ndarray
    ) -> None:
        self.rows.append(rows[own])
        self.logits.append(logits.float().cpu().numpy()[own])

    def compute(self, world_size: int) -> dict[str, float]:
        mine = (np.concatenate(self.rows), np.concatenate(self.logits))
        gathered: list[Any] = [None] * world_size
        torch.distributed.all_gather_object(gathered, mine)
        table: dict[int, np.ndarray] = {}
        for shard_rows, shard_logits in gathered:
            table.update(zip(shard_rows.tolist(), shard_logits, strict=True))
        ordered = np.stack([table[i] for i in range(len(self.labels))])
        return classification_metrics(ordered, self.labels, self.names)


class SequenceClassification(ServingTask):
    """Sentence (or sentence-pair) classification."""

    name: ClassVar[str] = "sequence-classification"
    model_class: ClassVar[str] = "AutoModelForSequenceClassification"
    peft_task_type: ClassVar[str] = "SEQ_CLS"
    labelled: ClassVar[bool] = True
    new_head: ClassVar[bool] = True
    second_text_key: ClassVar[str] = "text_pair_column"
    metrics: ClassVar[dict[str, bool]] = {"accuracy": True, "macro_f1": True, "loss": False}
    default_metric: ClassVar[str] = "macro_f1"
    gate_metrics: ClassVar[tuple[str, ...]] = ("macro_f1", "accuracy")

    def row_problem(self, row: RowView, known: set[str] | None, known_from: str) -> Problem | None:
        """Empty texts, then a missing label or one outside the known set."""
        problem = super().row_problem(row, known, known_from)
        if problem is not None:
            return problem
        if row.label is None:
            return "null_label", f"{row.where}: label in {row.columns[-1]!r} is missing"
        if known is not None and row.label not in known:
            allowed = ", ".join(sorted(known))
            return (
                "unknown_label",
                f"{row.where}: label {row.label!r} is not one of {allowed} ({known_from})",
            )
        return None

    def prep_columns(self, tokens: Tokens) -> dict[str, pa.Array]:
        """Token types of pairs (which text each token belongs to)."""
        if tokens.token_type_ids is None:
            return {}
        return {"token_type_ids": pa.array(tokens.token_type_ids, pa.list_(pa.int8()))}

    def targets(self, rows: Rows, index: np.ndarray, tensors: dict[str, torch.Tensor]):
        """Each row's class id."""
        return torch.from_numpy(rows.labels[index])

    def evaluator(self, rows: Rows, labels: LabelMap | None) -> Evaluator:
        """Gathers logits and scores loss, accuracy and F1 over the split."""
        assert labels is not None
        return _LogitsEvaluator(rows.labels, labels.names)

    def predictions(self, outputs: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
        """What predict returns per row: `label`, then one `prob_<label>` column per class.

        `outputs` are the served probabilities [rows, classes] (temperature applied).
        """
        probabilities = outputs
        columns = {"label": np.asarray(names, dtype=object)[probabilities.argmax(axis=1)]}
        for i, name in enumerate(names):
            columns[PROB_PREFIX + name] = probabilities[:, i].astype(np.float64)
        return pd.DataFrame(columns)

    def score_heldout(
        self,
        outputs: np.ndarray,
        heldout: HeldOutRows,
        names: Sequence[str],
        temperature: float,
        output_dir: Path,
        bins: int,
    ) -> tuple[dict[str, float], pd.DataFrame]:
        """Accuracy, F1 per class and calibration of the served probabilities; the confusion.

        `outputs` are the raw logits; the probabilities served apply `temperature`.
        """
        probs = softmax(outputs, temperature)
        ids = {name: i for i, name in enumerate(names)}
        labels = np.array([ids[name] for name in heldout.labels], dtype=np.int64)
        metrics = classification_report(probs, labels, tuple(names), bins)
        metrics |= calibration_metrics(outputs, labels, temperature, bins)
        metrics["ece_floor"] = ece_noise_floor(probs.max(axis=1), bins)
        confusion_png(labels, probs.argmax(axis=1), tuple(names), output_dir / CONFUSION)
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
        write_report_files(frame, output_dir, bins)
        return metrics, frame

    def signature(self, names: Sequence[str], data: Any) -> tuple[dict, dict]:
        """The served model's input and output columns with their types (name -> type)."""
        pairs = data.text_pair_column is not None
        inputs = {"text": "string", **({"text_pair": "string"} if pairs else {})}
        outputs = {"label": "string", **{PROB_PREFIX + name: "double" for name in names}}
        return inputs, outputs

    def summary(self, metrics: dict[str, float]) -> str:
        """Accuracy, macro-F1, calibration (with and without the temperature) and log loss."""
        m = metrics
        return (
            f"accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, ECE {m['ece']:.4f} "
            f"(temperature {m['temperature']:.3g}; {m['ece_raw']:.4f} without; "
            f"{m['ece_floor']:.4f} from a perfectly calibrated model on these rows), log loss "
            f"{m['loss']:.4f}"
        )

    def report_rows(self, metrics: dict[str, float], names: Sequence[str]) -> list[list[str]]:
        """The evaluation report's section: precision, recall and F1 per class."""
        keys = ("precision", "recall", "f1")
        return [[name, *(f"{metrics[f'{k}/{name}']:.4f}" for k in keys)] for name in names]
