"""The training section: the final model's evaluation curves and its best checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftpipe.report.html import figure_png, image, paragraph, table

SCORES = ("accuracy", "macro_f1", "f1", "precision", "recall", "token_accuracy")
"""Metrics drawn on the curves' right panel, where a task reports them (higher is better)."""

LOSSES = ("loss", "perplexity")
"""Metrics drawn on the left panel (lower is better)."""


def training_section(train_dir: Path) -> str:
    """result.json: the eval metrics at each evaluation of the final run, and the best one."""
    outcome = json.loads((Path(train_dir) / "result.json").read_text())
    history: list[dict[str, Any]] = outcome.get("history") or []
    best = outcome.get("metrics") or {}
    body = paragraph(
        f"The exported model is the checkpoint of step {best.get('step', '?')} "
        f"(epoch {best.get('epoch', 0):.2f}) of {len(history)} evaluations.",
        "verdict",
    )
    shown = [k for k in (*LOSSES, *SCORES) if k in best]
    last = outcome.get("final_metrics") or {}
    body += table(["metric", "best checkpoint", "last evaluation"],
                  [[k, best[k], last.get(k)] for k in shown])  # fmt: skip
    if history:
        body += image(curves_png(history), "Held-out metrics over training", width=720)
    return body


def curves_png(history: list[dict[str, Any]]) -> bytes:
    """Losses (left) and scores (right) against the optimizer step, one line per metric."""
    from matplotlib.figure import Figure

    steps = [h.get("step", i) for i, h in enumerate(history)]
    figure = Figure(figsize=(7.5, 3.2), layout="constrained")
    for axes, keys, title in zip(figure.subplots(1, 2), (LOSSES, SCORES),
                                 ("eval loss", "eval scores"), strict=True):  # fmt: skip
        for key in keys:
            if all(key in h for h in history):
                axes.plot(steps, [h[key] for h in history], marker=".", label=key)
        axes.set_xlabel("step")
        axes.set_title(title)
        if axes.lines:
            axes.legend(fontsize=8)
    return figure_png(figure)
