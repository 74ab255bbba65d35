"""Stages: one module per step of the DAG, each with a typed `run(config, ...) -> Result`.

The CLI, the KFP components and a Ray job (`ftpipe.stage`) all call `STAGES[name]`; none of
them builds command lines for another. Stage modules import their heavy dependencies (Ray,
MLflow, torch) only as far as they need them, so this registry stays light.

They load a config with `load_checked_config`, which also has the task check the settings only
it can judge (metric names), so a typo fails before any stage runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ftpipe.config import Config, load_config

NAMES = ("prep", "recommend", "tune", "train", "evaluate", "register", "promote", "predict")
"""Every stage, in DAG order (predict serves any registered version)."""


def stage_run(name: str) -> Callable[..., Any]:
    """The `run` function of the stage called `name`.

    Raises:
        KeyError: If there is no such stage.
    """
    if name not in NAMES:
        raise KeyError(f"no stage {name!r}; stages: {', '.join(NAMES)}")
    return importlib.import_module(f"ftpipe.stages.{name}").run


def check_config(config: Config) -> Config:
    """`config`, once its task accepts the settings only a task can judge.

    The config layer cannot import the tasks, so it takes `train.metric` and `promote.metric`
    as any string; the task of `data.task` checks them here (`Task.check_config`). Hub access
    is then set for this process as `model.offline` says, before any model loads or Ray starts
    (Ray workers inherit it).

    Raises:
        ConfigError: Naming the key and the values the task accepts.
    """
    from ftpipe.hub import set_hub_access
    from ftpipe.tasks import get_task  # imports torch: only once a stage is about to run

    get_task(config.data.task).check_config(config)
    set_hub_access(config.model.offline)
    return config


def load_checked_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load a config as `ftpipe.config.load_config` does, then `check_config` it.

    Raises:
        ConfigError: If the file, a key or a value is invalid, or the task refuses a setting.
    """
    return check_config(load_config(path, overrides))
