"""Stages: one module per step of the DAG, each with a typed `run(config, ...) -> Result`.

The CLI, the KFP components and a Ray job (`ftpipe.stage`) all call `STAGES[name]`; none of
them builds command lines for another. Stage modules import their heavy dependencies (Ray,
MLflow, torch) only as far as they need them, so this registry stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

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
