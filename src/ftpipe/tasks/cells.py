"""Reading a row's cells: what a task gets from the readers before any check.

Readers keep every cell as written (strings, numbers, lists, None); these helpers turn a cell
into a text or a label name, and `Cells` is what a task's `read_cells` returns for a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Problem = tuple[str, str]
"""A row's problem: (kind, one sentence naming the row)."""


@dataclass(frozen=True)
class Cells:
    """One batch of rows' text and label cells as their task reads them, before the checks.

    Attributes:
        texts: Per row, its text (for tagged words, the words joined by single spaces).
        labels: Per row, its label's name (for tagged words, the tags joined by single
            spaces); None when missing, "" for tasks without labels.
        problems: By row, why its cells cannot be read as this task's rows.
        repaired: How many tags were repaired (`data.repair_spans`).
    """

    texts: list[str]
    labels: list[str | None]
    problems: dict[int, Problem]
    repaired: int = 0


SCALARS = (str, int, float, bool, type(None))


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def text_value(value: Any) -> str:
    """A cell as text: missing values and non-scalars read as empty (reported elsewhere)."""
    if _is_missing(value) or not isinstance(value, SCALARS):
        return ""  # empty texts are reported; non-scalars are reported as malformed first
    return value if isinstance(value, str) else str(value)


def label_name(value: Any) -> str | None:
    """Labels may be strings or integers; both become their string name."""
    if _is_missing(value) or not isinstance(value, SCALARS):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip() or None
