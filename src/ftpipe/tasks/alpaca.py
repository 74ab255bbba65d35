"""Alpaca rows for causal LMs: an instruction, an optional input and an output per row.

A row becomes a prompt + completion row: the prompt is the standard Alpaca prompt (the
Stanford Alpaca repository's `PROMPT_DICT`, with or without its input section), and the
output is the completion, which `ftpipe.data.completions` ends with EOS, trims last and
trains on. Readers add each row's rendered prompt as the column `PROMPT_COLUMN`, so both of
prep's passes read the same prompt; the row checks read the raw cells (`cell_problem`).
"""

from __future__ import annotations

import math
from typing import Any

from ftpipe.tasks.cells import Problem, text_value

PROMPT_COLUMN = "<alpaca prompt>"
"""The column readers add to Alpaca rows: each row's rendered prompt (never a user's column:
it is left out of the names a config key is resolved against)."""

WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
"""Alpaca's prompt for a row with an input."""

WITHOUT_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
"""Alpaca's prompt for a row without one."""

PARTS = ("instruction", "input", "output")
"""What an Alpaca row's three cells hold, in order."""


def render_prompt(instruction: str, given: str = "") -> str:
    """The Alpaca prompt of an instruction and its input (blank: the form without an input)."""
    if not given.strip():
        return WITHOUT_INPUT.format(instruction=instruction)
    return WITH_INPUT.format(instruction=instruction, input=given)


def prompts(instructions: list[Any], inputs: list[Any]) -> list[str]:
    """The rendered prompt of each row, from its instruction and input cells as read.

    A cell that is not text renders as empty: the row checks refuse such rows (`cell_problem`).
    """
    return [
        render_prompt(text_value(instruction), text_value(given))
        for instruction, given in zip(instructions, inputs, strict=True)
    ]


def cell_problem(
    cells: tuple[Any, Any, Any], columns: tuple[str, str, str], where: str
) -> Problem | None:
    """Why an Alpaca row's cells cannot be trained on, or None.

    Args:
        cells: The instruction, input and output cells, as read (the input may be missing).
        columns: The columns they come from, for the message.
        where: The row's location (`line 12`).

    Returns:
        A `Problem` (kind, sentence naming the row and the column), or None.
    """
    for part, cell, column in zip(PARTS, cells, columns, strict=True):
        missing = cell is None or (isinstance(cell, float) and math.isnan(cell))
        if missing and part == "input":
            continue
        if not missing and not isinstance(cell, str):
            kind = type(cell).__name__
            article = "an" if kind[0] in "aeiou" else "a"
            return (
                "malformed",
                f"{where}: the {part} in column {column!r} is {article} {kind}, not text",
            )
        if missing or (part != "input" and not cell.strip()):
            state = "missing" if missing else "empty"
            return "empty_text", f"{where}: the {part} in column {column!r} is {state}"
    return None
