"""What a finished training run leaves behind, whichever way it ran (Ray or not)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftpipe.errors import FtpipeError

RECORD = "tracking.json"
"""File in `train.output_dir` naming the MLflow run that trained the model beside it."""


@dataclass(frozen=True)
class Outcome:
    """A finished run.

    Attributes:
        model_dir: The exported best model (output_dir/model).
        best_checkpoint: The checkpoint that model came from.
        metrics: The best checkpoint's evaluation metrics.
        final_metrics: The last evaluation's metrics (with `step` and `start_step`).
        history: Every evaluation's metrics, in order (for experiment tracking).
    """

    model_dir: str
    best_checkpoint: str
    metrics: dict[str, Any]
    final_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def finish(
    output_dir: Path,
    best_checkpoint: Path,
    metrics: dict,
    final_metrics: dict,
    history: list[dict] | None = None,
    location: str | None = None,
) -> Outcome:
    """Copy the best checkpoint's export to output_dir/model and write result.json.

    `location` is where the checkpoint lives when `best_checkpoint` is a local copy of it
    (from object storage); the outcome records it.

    Raises:
        FtpipeError: If the best checkpoint holds no export.
    """
    source = best_checkpoint / "model"
    if not source.is_dir():
        raise FtpipeError(f"The best checkpoint {best_checkpoint} holds no exported model/.")
    target = output_dir / "model"
    staging = output_dir / ".model.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)  # readers never see a half-copied export
    outcome = Outcome(str(target), location or str(best_checkpoint), metrics, final_metrics,
                      history or [])  # fmt: skip
    (output_dir / "result.json").write_text(json.dumps(asdict(outcome), indent=2) + "\n")
    return outcome


def write_record(train_output_dir: Path, record: dict[str, Any]) -> None:
    """Write the tracking record (run id, status, tracking URI) beside the export."""
    train_output_dir.mkdir(parents=True, exist_ok=True)
    (train_output_dir / RECORD).write_text(json.dumps(record, indent=2) + "\n")


def read_record(train_output_dir: str | Path) -> dict[str, Any] | None:
    """The tracking record a training run left in `train_output_dir`, if any.

    Plain JSON, so readers (a KFP component, evaluate) need no tracking client to find the run.
    """
    path = Path(train_output_dir) / RECORD
    return json.loads(path.read_text()) if path.is_file() else None
