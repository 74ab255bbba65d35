"""Tasks: one module per kind of fine-tuning job, registered by the name `data.task` gives.

A new task is one module here (a `Task` subclass) plus its entry in `TASKS`, and its tests.
"""

from ftpipe.errors import ConfigError
from ftpipe.tasks.base import SAFE_LOADING, Evaluator, RowView, ServingTask, Task, pad_rows
from ftpipe.tasks.causal_lm import CausalLM
from ftpipe.tasks.cells import SCALARS, Cells, label_name, text_value
from ftpipe.tasks.labels import LabelMap
from ftpipe.tasks.sequence_classification import PROB_PREFIX, SequenceClassification
from ftpipe.tasks.token_classification import TokenClassification

TASKS: dict[str, Task] = {
    task.name: task for task in (SequenceClassification(), TokenClassification(), CausalLM())
}
"""Every task by its `data.task` name."""

ALIASES = {"classification": "sequence-classification"}
"""Earlier names of tasks, still accepted in configs, prep outputs and exports."""


def get_task(name: str) -> Task:
    """The task registered as `name` (or under an earlier name).

    Raises:
        ConfigError: If no task has that name.
    """
    task = TASKS.get(ALIASES.get(name, name))
    if task is None:
        raise ConfigError(f"data.task={name} is not a task; use one of {', '.join(TASKS)}.")
    return task


__all__ = [
    "ALIASES",
    "PROB_PREFIX",
    "SAFE_LOADING",
    "SCALARS",
    "TASKS",
    "Cells",
    "Evaluator",
    "LabelMap",
    "RowView",
    "ServingTask",
    "Task",
    "get_task",
    "label_name",
    "pad_rows",
    "text_value",
]
