"""A sweep's results for people: a table of trials and two plots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ftpipe.config import Config

TrialConfig = Callable[[dict[str, Any]], Config]
"""A trial's full config from its sampled values."""


def trial_rows(grid: Any, metric: str, mode: str, config_of: TrialConfig) -> list[dict[str, Any]]:
    """One row per trial: its sampled config, best and last metrics, and why it stopped."""
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        config = result.config or {}
        row: dict[str, Any] = {"trial": Path(result.path).name, **config}
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
            "stop_reason": stop_reason(config_of(config), last),
        }
        rows.append(row)
    return rows


def write_results(rows: list[dict[str, Any]], directory: Path) -> Path:
    """results.csv: every trial's config, metrics and stop reason."""
    path = directory / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_plots(grid: Any, rows: list[dict[str, Any]], directory: Path, metric: str) -> list[Path]:
    """metric_vs_lr.png (coloured by freeze depth) and trials.png (the ASHA cut-offs)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = [r for r in rows if f"best_{metric}" in r]
    paths = []
    figure, axes = plt.subplots(figsize=(6, 4))
    keys = [k for k in ("strategy.freeze_layers", "strategy.name") if any(k in r for r in rows)]
    colour_key = keys[0] if keys else None
    x_key = "train.lr" if any("train.lr" in r for r in rows) else "trial"
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get(colour_key, "all") if colour_key else "all", []).append(row)
    for value, members in sorted(groups.items(), key=lambda item: str(item[0])):
        axes.scatter([m[x_key] for m in members], [m[f"best_{metric}"] for m in members],
                     label=f"{colour_key}={value}" if colour_key else None)  # fmt: skip
    if x_key == "train.lr":
        axes.set_xscale("log")
    axes.set_xlabel(x_key)
    axes.set_ylabel(f"best {metric}")
    if colour_key:
        axes.legend(fontsize=8)
    axes.set_title(f"{metric} per trial")
    paths.append(_save(figure, directory / "metric_vs_lr.png"))

    figure, axes = plt.subplots(figsize=(6, 4))
    stopped = {r["trial"] for r in rows if r["stop_reason"] == "stopped by ASHA"}
    for result in grid:
        history = result.metrics_dataframe
        if history is None or metric not in history:
            continue
        line = axes.plot(history["training_iteration"], history[metric], marker=".")[0]
        if Path(result.path).name in stopped:
            axes.plot(history["training_iteration"].iloc[-1], history[metric].iloc[-1], "x",
                      color=line.get_color(), markersize=10)  # fmt: skip
    axes.set_xlabel("evaluation (training iteration)")
    axes.set_ylabel(metric)
    axes.set_title("trials over training; x = stopped by ASHA")
    paths.append(_save(figure, directory / "trials.png"))
    return paths


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
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
