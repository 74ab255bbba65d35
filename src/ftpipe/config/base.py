"""What every config section shares: the frozen base class and the field types."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
)

StrategyName = Literal[
    "auto",
    "full",
    "freeze",
    "feature-extraction",
    "lora",
    "qlora",
    "ia3",
    "prefix",
    "p-tuning-v2",
    "p-tuning",
    "prompt-tuning",
    "gradual-unfreezing",
]


def _label_names(value: Any) -> Any:
    # Labels may be written as integers (0, 1) or strings; both name a class.
    if isinstance(value, (list, tuple)):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"data.labels repeats {', '.join(map(repr, repeated))}; list each once")
    return names


LabelNames = Annotated[
    tuple[str, ...], BeforeValidator(_label_names), AfterValidator(_unique), Field(min_length=2)
]
"""Declared labels: strings or integers, each once; stored as an immutable tuple of names."""

FrozenMapping = Annotated[
    Mapping[str, str],
    AfterValidator(lambda value: MappingProxyType(dict(value))),
    PlainSerializer(dict, return_type=dict),
]
"""A read-only mapping, so a frozen config cannot change under its hash."""

Column = str | StrictInt
"""A column name, or a 0-based index (booleans are not indexes)."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors and values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
