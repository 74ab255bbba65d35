"""The evaluation section: held-out metrics, per class, and the evidence behind them.

What a task's evaluate writes decides what is shown, so a section that does not apply to a
task is simply absent: classifiers have a confusion matrix, a reliability diagram and their
most confident errors; entity taggers a confusion of entity types and their most frequent
error patterns; causal LMs their generations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ftpipe.report.html import esc, figure_png, image, paragraph, table
from ftpipe.stages.evaluate import Evaluation
from ftpipe.tasks.base import CONFUSION
from ftpipe.tasks.classification_report import ERRORS, RELIABILITY
from ftpipe.tasks.lm_serving import GENERATIONS
from ftpipe.tasks.token_serving import ERRORS as ERROR_PATTERNS

SHOWN_CHARS = 400
"""Characters of an error's text the table shows (the rest is in errors.jsonl)."""


def evaluation_section(evaluate_dir: Path) -> str:
    """evaluation.json's metrics and every figure or list evaluate wrote beside it."""
    directory = Path(evaluate_dir)
    found = Evaluation.load(directory)
    split = "test" if found.split == "test" else "eval (optimistic: it also selected the model)"
    body = paragraph(f"{found.rows:,} held-out rows of the {split} split.", "verdict")
    headline = {k: v for k, v in found.metrics.items() if "/" not in k and k != "rows"}
    body += table(["metric", "value"], sorted(headline.items()))
    per_class = per_class_rows(found.metrics)
    if per_class is not None:
        body += "<h3>Per class</h3>" + table(["class", *per_class.columns],
                                             per_class.itertuples())  # fmt: skip
    if (directory / CONFUSION).is_file():
        body += image(directory / CONFUSION, "Confusion matrix (held-out rows)", width=480)
    if (directory / RELIABILITY).is_file():
        reliability = json.loads((directory / RELIABILITY).read_text())
        body += image(reliability_png(reliability), "Reliability diagram", width=480)
    if (directory / ERRORS).is_file():
        body += errors_table(directory / ERRORS)
    if (directory / ERROR_PATTERNS).is_file():
        patterns = json.loads((directory / ERROR_PATTERNS).read_text())
        body += "<h3>Most frequent errors</h3>" + table(
            ["kind", "pattern", "count"], [[p["kind"], p["pattern"], p["count"]] for p in patterns]
        )
    if (directory / GENERATIONS).is_file():
        body += f"<h3>Generations</h3><pre>{esc((directory / GENERATIONS).read_text())}</pre>"
    return body


def per_class_rows(metrics: dict[str, float]) -> pd.DataFrame | None:
    """The `<measure>/<class>` metrics as a table: a row per class, a column per measure."""
    cells = [(key.split("/", 1), value) for key, value in metrics.items() if "/" in key]
    if not cells:
        return None
    frame = pd.DataFrame([(name, measure, v) for (measure, name), v in cells],
                         columns=["class", "measure", "value"])  # fmt: skip
    table_ = frame.pivot(index="class", columns="measure", values="value")
    return table_.astype(object).where(table_.notna(), None)


def reliability_png(reliability: dict) -> bytes:
    """Accuracy against mean confidence per bin (bars), beside the diagonal of honesty."""
    from matplotlib.figure import Figure

    bins = reliability["bins"]
    rows = np.asarray(reliability["rows"], dtype=np.float64)
    seen = rows > 0
    accuracy = np.divide(reliability["correct"], rows, where=seen, out=np.zeros(bins))
    confidence = np.divide(reliability["confidence"], rows, where=seen, out=np.zeros(bins))
    centres = (np.arange(bins) + 0.5) / bins
    figure = Figure(figsize=(5, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.bar(centres[seen], accuracy[seen], width=1 / bins, edgecolor="black", label="accuracy")
    axes.plot(confidence[seen], accuracy[seen], "o", color="tab:orange",
              label="at the bin's mean confidence")  # fmt: skip
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence (top class probability)")
    axes.set_ylabel("accuracy")
    axes.set_title(f"Reliability ({int(rows.sum())} rows, {bins} bins)")
    axes.legend(fontsize=8, loc="upper left")
    return figure_png(figure)


def errors_table(path: Path) -> str:
    """The most confident errors (errors.jsonl), most confident first."""
    errors = pd.read_json(path, lines=True) if path.stat().st_size else pd.DataFrame()
    title = f"<h3>The {len(errors)} most confident errors</h3>"
    if errors.empty:
        return title + paragraph("No held-out row was predicted wrongly.")
    for column in ("text", "text_pair"):
        if column in errors:  # a row of many pages would bury the table
            errors[column] = [t if len(t) <= SHOWN_CHARS else t[:SHOWN_CHARS] + "…"
                              for t in errors[column].astype(str)]  # fmt: skip
    return title + table(list(errors.columns), errors.itertuples(index=False))
