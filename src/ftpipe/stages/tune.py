"""The tune stage: a Ray Tune sweep, the sweep and each trial tracked in MLflow."""

from __future__ import annotations

from ftpipe.config import Config
from ftpipe.data.prepared import PrepDir
from ftpipe.registry.tracking import TrainingRun
from ftpipe.strategies.recommend import resolve_auto
from ftpipe.tune.sweep import SweepOutcome, run_sweep


def run(config: Config, resume: bool = False) -> SweepOutcome:
    """Sweep the search space (`strategy.name=auto` resolved first); see `ftpipe.tune.sweep`.

    Args:
        config: The run's config.
        resume: Continue the interrupted sweep of this config.

    Raises:
        ConfigError: If `data.output_dir` holds data prepared with other data keys.
    """
    PrepDir.check_config(config, "tune")
    return run_sweep(resolve_auto(config), TrainingRun, resume=resume)
