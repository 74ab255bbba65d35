"""Builders for registry tests: configs pointed at the test store, synthetic evaluations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ftpipe.config import Config, apply_overrides
from ftpipe.config.load import validate_config

EXPERIMENT = "ftpipe-tests"


def with_registry(config: Config, uri: str, name: str, *overrides: str) -> Config:
    """The same run, tracked in the test store under registered model `name`."""
    settings = (
        f"registry.tracking_uri={uri}",
        f"registry.experiment_name={EXPERIMENT}",
        f"registry.model_name={name}",
        "registry.log_system_metrics=false",
        "evaluate.latency_rows=4",
        "promote.bootstrap_samples=1000",
        *overrides,
    )
    return validate_config(apply_overrides(config.model_dump(mode="json"), settings))


def synthetic_predictions(
    labels: np.ndarray, predicted: np.ndarray, names: tuple[str, ...]
) -> pd.DataFrame:
    """A predictions file as `ftpipe evaluate` writes it (texts are the row numbers)."""
    return pd.DataFrame(
        {
            "row": np.arange(len(labels)),
            "text": [f"row {i}" for i in range(len(labels))],
            "label": np.asarray(names, dtype=object)[labels],
            "predicted": np.asarray(names, dtype=object)[predicted],
            "correct": labels == predicted,
        }
    )


def corrupt(labels: np.ndarray, accuracy: float, classes: int, seed: int) -> np.ndarray:
    """Predictions that are right on a random `accuracy` share of rows, wrong elsewhere."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(labels)) >= accuracy
    shifted = (labels + rng.integers(1, classes, len(labels))) % classes
    return np.where(wrong, shifted, labels)


def swap(labels: np.ndarray, predicted: np.ndarray, fix: int, spoil: int, seed: int) -> np.ndarray:
    """Another model on the same rows: right on `fix` of the errors, wrong on `spoil` hits."""
    rng = np.random.default_rng(seed)
    out = predicted.copy()
    errors = rng.permutation(np.flatnonzero(labels != predicted))[:fix]
    hits = rng.permutation(np.flatnonzero(labels == predicted))[:spoil]
    out[errors] = labels[errors]
    out[hits] = (labels[hits] + 1) % (labels.max() + 1)
    return out


def write_evaluation(
    directory: Path, frame: pd.DataFrame, fingerprint: str, split: str = "eval", **metrics: float
):
    """An `Evaluation` on disk, as `ftpipe evaluate` leaves it (predictions + summary)."""
    from ftpipe.stages.evaluate import Evaluation

    directory.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(directory / "predictions.parquet", index=False)
    accuracy = float(frame["correct"].mean())
    evaluation = Evaluation(
        model=str(directory),
        fingerprint=fingerprint,
        rows=len(frame),
        metrics={"accuracy": accuracy, "macro_f1": accuracy, "ece": 0.0, **metrics},
        output_dir=str(directory),
        split=split,
    )
    evaluation.save()
    return evaluation


def evaluated_versions(config: Config, predictor, heldout, model_dir: Path, tmp_path: Path):
    """Register the export twice, each evaluated and gated in turn; yield each evaluation and
    the gate's decision.

    The second version is the same weights with another model card, so it registers as a new
    version that cannot beat the first.
    """
    import shutil

    from ftpipe.registry.promote import promote
    from ftpipe.registry.tracking import TrainingRun, log_evaluation
    from ftpipe.registry.versions import register
    from ftpipe.stages.evaluate import evaluate_model

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    with (copy / "README.md").open("a") as card:
        card.write("\nA copy.\n")
    for attempt, directory in enumerate((Path(model_dir), copy)):
        with TrainingRun(config, record_dir=tmp_path / str(attempt)) as run:
            pass
        evaluation = evaluate_model(predictor, heldout, tmp_path / f"eval{attempt}", str(directory))
        evaluation.run_id = log_evaluation(evaluation, config, run.run_id)
        version = register(config, directory, run_id=run.run_id, evaluation=evaluation)
        yield version, evaluation, promote(config).decision
