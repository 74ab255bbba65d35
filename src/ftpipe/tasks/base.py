"""What a task is: data in, a model class, targets, a loss's metrics out.

A task owns everything that differs between, say, sentence classification and language
modelling: which config keys name its columns, which prep columns it adds, how a batch's
targets are built, which `AutoModelFor...` class loads the base and the export, its metrics
and which one selects checkpoints, and what serving returns. The stages and the training core
call the task; they never ask which task it is.

Tasks sit at the bottom of the layers (beside `ftpipe.config`): they import torch, numpy and
transformers, never another ftpipe package.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ftpipe.config.schema import Config
from ftpipe.errors import ConfigError, FtpipeError
from ftpipe.tasks.labels import LabelMap

SAFE_LOADING = {"trust_remote_code": False, "use_safetensors": True}
"""Never run a model repository's code, never unpickle weights."""


class Rows(Protocol):
    """The prepared rows a task reads targets from (`ftpipe.data.prepared.Split`)."""

    labels: np.ndarray
    prompt_lengths: np.ndarray | None


class Tokens(Protocol):
    """Tokenizer output as prep keeps it (`ftpipe.data.tokenize.Tokenized`)."""

    token_type_ids: list[list[int]] | None
    second_starts: list[int] | None


class Evaluator(Protocol):
    """Accumulates one evaluation over batches, then reduces it across ranks."""

    def update(
        self, logits: torch.Tensor, targets: torch.Tensor, rows: np.ndarray, own: np.ndarray
    ) -> None:
        """Add a batch: its logits, targets, row indices and which rows this rank owns."""

    def compute(self, world_size: int) -> dict[str, float]:
        """The metrics over every rank's rows (a collective: every rank calls it)."""


@dataclass(frozen=True)
class RowView:
    """One input row's content as validation sees it.

    Attributes:
        where: The row's location, for messages (`file.csv row 12`).
        text: The text.
        second: The second text (a pair's, or a completion), or None when there is none.
        label: The label's name; None when missing, "" for tasks without labels.
        columns: The columns read, in order: text, then the second text's, then the label's.
    """

    where: str
    text: str
    second: str | None
    label: str | None
    columns: tuple[str, ...]


Problem = tuple[str, str]
"""A row's problem: (kind, one sentence naming the row)."""


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows to the longest: (ids, attention mask), the layout training uses."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[j, : len(row)] = 1
    return ids, mask


class Task(ABC):
    """One kind of fine-tuning job. Subclasses set the class attributes and the hooks.

    Attributes:
        name: The value of `data.task`.
        model_class: The transformers `AutoModelFor...` class of the base model and export.
        peft_task_type: PEFT's task type for adapters on this model class.
        labelled: Rows carry a class label; prep writes a label map.
        new_head: The output layer is new (trained at the head's learning rate), not
            pretrained.
        second_text_key: The `data.*` key naming the optional second text of a row.
        metrics: Every metric the task reports, and whether higher is better.
        default_metric: What `train.metric=auto` selects checkpoints by.
        counts_tokens: The progress log reports tokens/s (targets are tokens, not rows).
    """

    name: ClassVar[str]
    model_class: ClassVar[str]
    peft_task_type: ClassVar[str]
    labelled: ClassVar[bool]
    new_head: ClassVar[bool]
    second_text_key: ClassVar[str]
    metrics: ClassVar[dict[str, bool]]
    default_metric: ClassVar[str]
    counts_tokens: ClassVar[bool] = False

    def resolve_metric(self, metric: str) -> tuple[str, bool]:
        """The checkpoint-selection metric for `train.metric`, and whether higher is better.

        Raises:
            ConfigError: If the task does not report the metric.
        """
        if metric == "auto":
            metric = self.default_metric
        if metric not in self.metrics:
            raise ConfigError(
                f"train.metric={metric} is not reported for data.task={self.name}; use one of "
                f"{', '.join(self.metrics)} or auto."
            )
        return metric, self.metrics[metric]

    def load_model(self, path: str, labels: LabelMap | None, **kwargs: Any) -> Any:
        """The pretrained model at `path` with this task's head (safetensors, no remote code)."""
        import transformers

        auto = getattr(transformers, self.model_class)
        return auto.from_pretrained(path, **SAFE_LOADING, **self.head_kwargs(labels), **kwargs)

    def head_kwargs(self, labels: LabelMap | None) -> dict[str, Any]:
        """Keyword arguments that size the model's head (none by default)."""
        return {}

    def row_problem(self, row: RowView, known: set[str] | None, known_from: str) -> Problem | None:
        """The first problem with a row's content, or None (format errors are checked before).

        Args:
            row: The row.
            known: Labels a row may have, or None for any.
            known_from: Where `known` came from, for messages.
        """
        if not row.text.strip():
            return "empty_text", f"{row.where}: text in {row.columns[0]!r} is empty"
        if row.second is not None and not row.second.strip():
            return "empty_text", f"{row.where}: text in {row.columns[1]!r} is empty"
        return None

    @abstractmethod
    def prep_columns(self, tokens: Tokens) -> dict[str, pa.Array]:
        """Per-row columns prep writes after `input_ids`, by name."""

    @abstractmethod
    def targets(self, rows: Rows, index: np.ndarray, tensors: dict[str, torch.Tensor]):
        """The `labels` tensor of a batch of rows, given its padded input tensors."""

    @abstractmethod
    def evaluator(self, rows: Rows, labels: LabelMap | None) -> Evaluator:
        """A fresh evaluator over the eval rows."""

    def serving(self, what: str) -> ServingTask:
        """This task as one whose models are served, or an error saying `what` cannot be done.

        Args:
            what: The stage that needs a served model (evaluate, register, promote, predict).

        Raises:
            FtpipeError: If the task's models cannot be evaluated, registered or served yet.
        """
        if isinstance(self, ServingTask):
            return self
        raise FtpipeError(
            f"{what} needs a model whose task serves predictions, and this one was trained "
            f"for data.task={self.name}: evaluation, registration and serving of {self.name} "
            "models are not available yet."
        )

    def check_config(self, config: Config) -> None:
        """Fail early on settings this task cannot honour (today: `train.metric`).

        Raises:
            ConfigError: Naming the key and the values the task accepts.
        """
        self.resolve_metric(config.train.metric)


class ServingTask(Task):
    """A task whose models are evaluated, registered, promoted and served.

    Attributes:
        gate_metrics: What `promote.metric` may name: metrics the promotion gate computes from
            the served predictions on the held-out set. Higher is better for each.
    """

    gate_metrics: ClassVar[tuple[str, ...]]

    def gate_metric(self, metric: str) -> str:
        """`metric` if the promotion gate can compare this task's models by it.

        Raises:
            ConfigError: If the gate cannot compare by it.
        """
        if metric not in self.gate_metrics:
            raise ConfigError(
                f"promote.metric={metric} cannot decide promotions for data.task={self.name}; "
                f"use one of {', '.join(self.gate_metrics)}."
            )
        return metric

    def check_config(self, config: Config) -> None:
        """Also check `promote.metric`, so a typo fails before training, not after it."""
        super().check_config(config)
        self.gate_metric(config.promote.metric)

    @abstractmethod
    def predictions(self, probabilities: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
        """What predict returns per row."""

    @abstractmethod
    def signature(self, names: Sequence[str], pairs: bool) -> tuple[dict, dict]:
        """The served model's input and output columns, name -> type."""

    @abstractmethod
    def report_rows(self, metrics: dict[str, float], names: Sequence[str]) -> list[list[str]]:
        """The task's section of the evaluation report, one table row per line."""
