"""A sweep's results for people: a table of trials and two plots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ftpipe.config import Config

TrialConfig = Callable[[dict[str, Any]], Config]
"""A trial's full config from its sampled values."""

LR = "train.lr"
"""The column of a trial's learning rate (the sweep's x axis)."""


def trial_rows(grid: Any, metric: str, mode: str, config_of: TrialConfig) -> list[dict[str, Any]]:
    """One row per trial: its sampled config, best and last metrics, and why it stopped.

    Every row has the trial's `train.lr`, sampled or not, so the sweep's plot can always put
    the learning rate on its x axis.
    """
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        config = result.config or {}
        trial = config_of(config)
        row: dict[str, Any] = {"trial": Path(result.path).name, LR: trial.train.lr, **config}
        if result.error is not None or history is None or metric not in history:
            row |= {"stop_reason": f"error: {type(result.error).__name__}"}
            rows.append(row)
            continue
        last = history.iloc[-1]
        row |= {
            f"best_{metric}": history[metric].max() if mode == "max" else history[metric].min(),
            f"last_{metric}": last[metric],
            "evaluations": len(history),
            "last_epoch": last.get("epoch"),
            "stop_reason": stop_reason(trial, last),
        }
        rows.append(row)
    return rows


def write_results(rows: list[dict[str, Any]], directory: Path) -> Path:
    """results.csv: every trial's config, metrics and stop reason."""
    path = directory / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_plots(grid: Any, rows: list[dict[str, Any]], directory: Path, metric: str) -> list[Path]:
    """metric_vs_lr.png (log x axis, coloured by freeze depth or strategy) and trials.png."""
    from matplotlib.figure import Figure  # no pyplot: files only, no global figure state

    rows = [r for r in rows if f"best_{metric}" in r]
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    keys = [k for k in ("strategy.freeze_layers", "strategy.name") if any(k in r for r in rows)]
    colour_key = keys[0] if keys else None
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get(colour_key, "all") if colour_key else "all", []).append(row)
    for value, members in sorted(groups.items(), key=lambda item: str(item[0])):
        axes.scatter([m[LR] for m in members], [m[f"best_{metric}"] for m in members],
                     label=f"{colour_key}={value}" if colour_key else "trial")  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (train.lr, log scale)")
    axes.set_ylabel(f"best {metric}")
    axes.legend(fontsize=8)
    axes.set_title(f"Best {metric} against learning rate, per trial")
    paths = [_save(figure, directory / "metric_vs_lr.png")]

    figure = Figure(figsize=(8.5, 4), layout="constrained")
    axes = figure.add_subplot()
    by_trial = {r["trial"]: r for r in rows}
    for result in grid:
        history, row = result.metrics_dataframe, by_trial.get(Path(result.path).name)
        if history is None or metric not in history or row is None:
            continue
        stopped = row["stop_reason"] == "stopped by ASHA"
        label = f"{trial_label(row)}{' (stopped by ASHA)' if stopped else ''}"
        line = axes.plot(history["training_iteration"], history[metric], marker=".",
                         label=label)[0]  # fmt: skip
        if stopped:
            axes.plot(history["training_iteration"].iloc[-1], history[metric].iloc[-1], "x",
                      color=line.get_color(), markersize=10)  # fmt: skip
    axes.set_xlabel("evaluation (training iteration)")
    axes.set_ylabel(metric)
    # Beside the axes, not on them: a sweep of 20 trials would hide its own curves.
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), ncols=1 + len(rows) // 16)
    axes.set_title("Trials over training; x: stopped by ASHA")
    paths.append(_save(figure, directory / "trials.png"))
    return paths


def trial_label(row: dict[str, Any]) -> str:
    """A trial's sampled values in a few characters: "lr 3e-05, freeze_layers 2"."""
    parts = [f"lr {row[LR]:.0e}"]
    for key, value in row.items():
        if key.startswith(("strategy.", "train.")) and key != LR:
            shown = f"{value:.2g}" if isinstance(value, float) else value
            parts.append(f"{key.split('.')[-1]} {shown}")
    return ", ".join(parts)


def stop_reason(config: Config, last: pd.Series) -> str:
    """Why a trial ended: it ran its course, its own patience ran out, or ASHA stopped it."""
    patience = config.train.patience
    if patience is not None and last.get("bad_evals", 0) >= patience:
        return "early stop (train.patience)"
    finished_steps = config.train.max_steps is not None and last["step"] >= config.train.max_steps
    if not finished_steps and last["epoch"] + 1e-9 < config.train.epochs:
        return "stopped by ASHA"
    return "completed"


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path, dpi=100)
    return path
