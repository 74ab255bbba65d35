"""The config as MLflow parameters: flattened to dotted keys, long values set aside.

MLflow caps a parameter's value (6,000 characters on current servers, 500 on older ones) and
rejects, or silently truncates, longer ones. A long `data.labels` or `id2label` would then
fail the run or lose information, so every value over `MAX_PARAM_CHARS` goes to a JSON
artifact instead, and the parameter names that artifact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ftpipe.config.schema import Config

MAX_PARAM_CHARS = 500
"""The lowest value limit of any MLflow server still in use; longer values become artifacts."""

LONG_PARAMS_DIR = "params"
"""Artifact directory for the values too long to be parameters."""


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings to one level with dotted keys; lists and scalars are leaves."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, child in value.items():
            out |= flatten(child, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): value}


def as_text(value: Any) -> str:
    """A parameter value as MLflow stores it: strings verbatim, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Split into (parameters, artifacts): artifact path -> JSON text for each long value.

    A long value's parameter becomes a pointer to its artifact, so the key stays searchable.
    """
    short: dict[str, str] = {}
    long: dict[str, str] = {}
    for key, value in params.items():
        text = as_text(value)
        if len(text) <= MAX_PARAM_CHARS:
            short[key] = text
            continue
        path = f"{LONG_PARAMS_DIR}/{key}.json"
        long[path] = json.dumps({"key": key, "value": value}, indent=2, sort_keys=True) + "\n"
        short[key] = f"<{len(text)} characters: artifact {path}>"
    return short, long


def headline_params(config: Config) -> dict[str, Any]:
    """The choices that matter most, under short names, so a run's parameters lead with them.

    The full config follows as dotted keys (`train.lr`, ...): the names a search space uses.
    """
    train = config.train
    return {"strategy": config.strategy.name, "model": config.model.name, "lr": train.lr,
            "head_lr": train.head_lr, "epochs": train.epochs,
            "batch_size": train.batch_size}  # fmt: skip
