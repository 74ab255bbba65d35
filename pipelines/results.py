"""Each stage's one-line result for `ftpipe run`'s table, read from the files the stage wrote.

Both runners show the same lines: the KFP local runner (pipelines/local.py) finds a stage's
files under its task's directory, `ftpipe run --no-kfp` (pipelines/sequential.py) under its
own output directories; this module reads them wherever they are. A file that is missing or
unreadable gives an empty result, never an error: the table is a view, the stage's outcome is
what its own exit status says.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ftpipe.config import Config
from ftpipe.data.prepared import PrepDir
from ftpipe.errors import FtpipeError
from ftpipe.stages.evaluate import Evaluation
from ftpipe.tasks import get_task

Reader = Callable[[Path], str]
"""Reads one stage's result line from a directory."""

SHOWN_METRICS = 3
"""How many held-out metrics the evaluate line shows (the selection metric first)."""


def read(reader: Reader, directory: Path) -> str:
    """`reader`'s line for `directory`, or "" when its files are missing or unreadable."""
    try:
        return reader(directory)
    except (OSError, ValueError, KeyError, TypeError, FtpipeError):
        return ""


@dataclass(frozen=True)
class Results:
    """The readers, with what they need from the run's config.

    Attributes:
        metric: The checkpoint-selection metric (`train.metric`, resolved by the task).
        metrics: The task's metrics, the selection metric first: what evaluate's line shows.
        model_name: The registered model's name.
    """

    metric: str
    metrics: tuple[str, ...]
    model_name: str

    @classmethod
    def of(cls, config: Config) -> Results:
        """The readers for a run of `config`."""
        task = get_task(config.data.task)
        metric, _ = task.resolve_metric(config.train.metric)
        others = tuple(name for name in task.metrics if name != metric)
        return cls(metric, (metric, *others), config.registry.model_name)

    def prep(self, directory: Path) -> str:
        """Rows per split and the data fingerprint, from prep's output directory."""
        prepared = PrepDir(directory)
        rows = prepared.rows
        splits = ", ".join(f"{name} {count:,}" for name, count in rows.items())
        return f"{sum(rows.values()):,} rows ({splits}), fingerprint {prepared.fingerprint[:12]}"

    def recommend(self, directory: Path) -> str:
        """The recommended strategy and the case that chose it."""
        picked = json.loads((directory / "recommendation.json").read_text())
        return f"strategy {picked['strategy']} ({picked['case']})"

    def tune(self, directory: Path) -> str:
        """The trials and the best score, from the directory that holds the sweep."""
        (sweep,) = directory.glob("sweep-*")
        best = json.loads((sweep / "best.json").read_text())
        trials = best.get("trials", 1)
        stopped = f" ({best['stopped_early']} stopped early)" if best.get("stopped_early") else ""
        settings = ", ".join(f"{key}={_short(value)}" for key, value in best["config"].items())
        return (f"{trials} trial{'s' * (trials != 1)}{stopped}, best {best['metric']} "
                f"{best['best']:.4f} with {settings}")  # fmt: skip

    def train(self, directory: Path) -> str:
        """The best checkpoint's step and score, from train's output directory."""
        outcome = json.loads((directory / "result.json").read_text())
        best = outcome["metrics"]
        return (f"best checkpoint at step {best['step']:.0f}: {self.metric} "
                f"{best[self.metric]:.4f}")  # fmt: skip

    def evaluate(self, directory: Path) -> str:
        """The held-out split's size and headline metrics."""
        found = Evaluation.load(directory)
        shown = [name for name in self.metrics if name in found.metrics][:SHOWN_METRICS]
        scores = ", ".join(f"{name} {found.metrics[name]:.4f}" for name in shown)
        return f"{found.split} split, {found.rows:,} rows: {scores}"

    def register(self, version: str) -> str:
        """The version registered under the challenger alias."""
        return f"{self.model_name} version {version} (alias challenger)"

    @staticmethod
    def gate(decision: Path) -> str:
        """The gate's decision, from its decision.json (register's record, or promote's)."""
        found = json.loads(decision.read_text())["decision"]
        if not found:
            return "already champion"
        # The reason opens with the verdict ("promoted: every check passed", "kept: failed
        # margin"); its evidence, in brackets, is in the report.
        return found["reason"].split(" (", 1)[0]


def _short(value: object) -> str:
    """A sampled value as a person reads it: floats to 4 significant digits (0.001374)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
