"""The train stage: one tracked MLflow run around the training core, on Ray Train or not."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ftpipe.config import Config
from ftpipe.data.prepared import PrepDir
from ftpipe.registry.tracking import TrainingRun
from ftpipe.strategies.recommend import resolve_auto
from ftpipe.train.outcome import Outcome


@dataclass(frozen=True)
class TrainStageResult:
    """A finished training.

    Attributes:
        config: The config trained with (`strategy.name=auto` resolved).
        outcome: The best model's export, its metrics and the evaluation history.
        seconds: Wall time.
    """

    config: Config
    outcome: Outcome
    seconds: float


def run(config: Config, no_ray: bool = False) -> TrainStageResult:
    """Fine-tune with the configured strategy and export the best model.

    One MLflow run per training holds the params, lineage and prep artifacts, the live
    training curves and evaluations (`train/...`, `eval/...` by step), and the exported
    model's scores (`best/...`). A run that raises ends FAILED, and the register stage
    refuses it.

    Args:
        config: The run's config.
        no_ray: Run the training core in this process instead of on Ray Train workers.

    Raises:
        ConfigError: If `data.output_dir` holds data prepared with other data keys.
    """
    PrepDir.check_config(config, "train")
    config = resolve_auto(config)
    started = time.perf_counter()
    with TrainingRun(config) as tracked:
        # Curves and evaluations reach the run as they happen; the summary once it ends.
        if no_ray:
            from ftpipe.train.local import train_local

            outcome = train_local(config, on_metrics=tracked.live())
        else:
            from ftpipe.train.ray_train import train_ray

            outcome = train_ray(config, on_metrics=tracked.live())
        tracked.log_summary(outcome.metrics)
    return TrainStageResult(config, outcome, time.perf_counter() - started)
