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
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ftpipe.config.schema import Config
from ftpipe.errors import ConfigError, FtpipeError
from ftpipe.tasks.cells import Cells, Problem, label_name, text_value
from ftpipe.tasks.labels import LabelMap

SAFE_LOADING = {"trust_remote_code": False, "use_safetensors": True}
"""Never run a model repository's code, never unpickle weights."""


class Rows(Protocol):
    """The prepared rows a task reads targets from (`ftpipe.data.prepared.Split`)."""

    labels: np.ndarray
    prompt_lengths: np.ndarray | None
    token_labels: list[list[int]] | None
    word_ids: list[list[int]] | None
    sentences: np.ndarray | None


class Tokens(Protocol):
    """Tokenizer output as prep keeps it (`ftpipe.data.tokenize.Tokenized`)."""

    token_type_ids: list[list[int]] | None
    second_starts: list[int] | None
    targets: list[list[int]] | None


class HeldOutRows(Protocol):
    """The held-out rows evaluate scores (`ftpipe.stages.evaluate.HeldOut`)."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[str]


CONFUSION = "confusion_matrix.png"
"""The confusion figure evaluate writes beside metrics.json."""


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
        line: For files with one word per line (CoNLL), the line of the row's first word.
    """

    where: str
    text: str
    second: str | None
    label: str | None
    columns: tuple[str, ...]
    line: int | None = None


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows to the longest: (ids, attention mask), the layout training uses."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[j, : len(row)] = 1
    return ids, mask


def pad_targets(
    token_labels: Sequence[Sequence[int]], index: np.ndarray, width: int
) -> torch.Tensor:
    """Per-token targets of the rows at `index`, right-padded with -100 to `width`."""
    labels = torch.full((len(index), width), -100, dtype=torch.long)
    for j, row in enumerate(index.tolist()):
        values = token_labels[row]
        labels[j, : len(values)] = torch.as_tensor(values, dtype=torch.long)
    return labels


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
        pretokenized: Rows are words with a tag each (lists), tokenized word by word.
        per_token_features: The head reads every token's state, so feature extraction caches
            one vector per token (`strategy.pooling` must stay `auto`), not one per row.
        ends_completions: A row's second text is a completion: tokenized apart from its
            prompt, ended with EOS, the prompt trimmed first (`ftpipe.data.completions`).
        generates: Served models answer prompts with generated text (causal LMs).
        prep_layout: The version of what prep writes for this task; data prepared at another
            version is refused, and the fingerprint covers it from version 2 on.
        unsupported_strategies: Strategies this task cannot train with, and why.
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
    pretokenized: ClassVar[bool] = False
    per_token_features: ClassVar[bool] = False
    ends_completions: ClassVar[bool] = False
    generates: ClassVar[bool] = False
    prep_layout: ClassVar[int] = 1
    unsupported_strategies: ClassVar[dict[str, str]] = {}

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
        """A new head with one output per class, named by the label map.

        A checkpoint's own head of another size (a model fine-tuned for other labels) is
        replaced, not an error. Without a map (loading an export), or for a task whose output
        layer is pretrained, the checkpoint's config sizes the head.
        """
        if labels is None or not self.new_head:
            return {}
        return {
            "num_labels": len(labels.names),
            **labels.to_json(),
            "ignore_mismatched_sizes": True,
        }

    def read_cells(
        self,
        texts: list[Any],
        labels: list[Any] | None,
        locations: list[str],
        lines: list[int] | None,
        config: Any,
    ) -> Cells:
        """A batch's text and label cells as this task's texts and label names.

        Args:
            texts: The text cells as read.
            labels: The label cells as read; None for unlabelled tasks.
            locations: Per row, where it is, for messages.
            lines: For files with one word per line (CoNLL), per row the line of its first
                word; None otherwise.
            config: The data section (`ftpipe.config.schema.DataConfig`).
        """
        names = [label_name(v) for v in labels] if labels is not None else [""] * len(texts)
        return Cells([text_value(v) for v in texts], names, {})

    def text_of(self, cell: Any) -> str:
        """The text a valid row's text cell holds (as `read_cells` reads it)."""
        return text_value(cell)

    def list_cells(self, config: Any) -> tuple[str, ...]:
        """The roles (`text`, `label`) whose cells are lists, checked in `read_cells`."""
        return ("text", "label") if self.pretokenized else ()

    def tag_scheme(self, labels: list[Any]) -> str | None:
        """The tag scheme of raw label cells, for tasks that tag words; None otherwise."""
        return None

    def classes(self, row_labels: Sequence[str]) -> list[str]:
        """The classes the label map holds, from the distinct row labels seen in train."""
        return list(row_labels)

    def strata(self, row_labels: Sequence[str], labels: LabelMap) -> np.ndarray:
        """Per distinct row label, the id of its stratum in stratified splits (its class id)."""
        ids = labels.label2id
        return np.array([ids.get(name, -1) for name in row_labels], dtype=np.int64)

    def label_stats(self, counts: dict[str, int], labels: LabelMap) -> dict[str, Any]:
        """stats.json's label section of a split, from its rows per distinct row label."""
        return {"rows_per_label": {name: counts.get(name, 0) for name in labels.names}}

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
        """Fail early on settings this task cannot honour (`train.metric`, the strategy).

        Raises:
            ConfigError: Naming the key and the values the task accepts.
        """
        self.resolve_metric(config.train.metric)
        self.check_strategy(config.strategy.name)
        if self.per_token_features and config.strategy.pooling != "auto":
            raise ConfigError(
                f"strategy.pooling={config.strategy.pooling} makes one vector of each row, and "
                f"data.task={self.name} tags every word, so its head reads each token's own "
                "state. Leave strategy.pooling at auto."
            )

    def check_strategy(self, name: str) -> None:
        """Refuse a strategy this task cannot train with (`unsupported_strategies`).

        Raises:
            ConfigError: Saying why, and what to use instead.
        """
        why = self.unsupported_strategies.get(name)
        if why is not None:
            raise ConfigError(f"strategy.name={name} {why}")


class ServingTask(Task):
    """A task whose models are evaluated, registered, promoted and served.

    Attributes:
        gate_metrics: What `promote.metric` may name: metrics the promotion gate computes from
            the served predictions on the held-out set. Higher is better for each.
        report_unit: What a row of the report is about (`report_rows`).
        report_columns: The report's value columns, after the unit.
    """

    gate_metrics: ClassVar[tuple[str, ...]]
    report_unit: ClassVar[str] = "class"
    report_columns: ClassVar[tuple[str, ...]] = ("precision", "recall", "F1")

    def gate_metric(self, metric: str) -> str:
        """`metric` if the promotion gate can compare this task's models by it (`auto`: the first).

        Raises:
            ConfigError: If the gate cannot compare by it.
        """
        if metric == "auto":
            return self.gate_metrics[0]
        if metric not in self.gate_metrics:
            raise ConfigError(
                f"promote.metric={metric} cannot decide promotions for data.task={self.name}; "
                f"use one of {', '.join(self.gate_metrics)} or auto."
            )
        return metric

    def check_config(self, config: Config) -> None:
        """Also check `promote.metric`, so a typo fails before training, not after it."""
        super().check_config(config)
        self.gate_metric(config.promote.metric)

    @abstractmethod
    def predictions(self, outputs: Any, names: Sequence[str]) -> pd.DataFrame:
        """What predict returns per row, from the model's outputs (`Predictor.outputs`)."""

    @abstractmethod
    def score_heldout(
        self,
        outputs: Any,
        heldout: HeldOutRows,
        names: Sequence[str],
        temperature: float,
        output_dir: Path,
        bins: int,
    ) -> tuple[dict[str, float], pd.DataFrame]:
        """Score the model's outputs on held-out rows and draw the confusion figure.

        Args:
            outputs: The model's outputs on the rows (`Predictor.outputs`).
            heldout: The rows: texts, second texts and label names.
            names: The label map's names, in id order.
            temperature: The export's temperature (classification probabilities use it).
            output_dir: Where `CONFUSION` (and any other figure or file) is written.
            bins: Calibration bins, where the task measures calibration.

        Returns:
            Every scalar metric, and one row per held-out row (`row`, `text`, `label`,
            `predicted`, ...), which the promotion gate reads.
        """

    @abstractmethod
    def signature(self, names: Sequence[str], data: Any) -> tuple[dict, dict]:
        """The served model's input and output columns, name -> type, given its data section.

        A type is an MLflow type name (`string`, `double`, `long`), `[type]` for a list of it,
        or `{field: type}` for an object.
        """

    @abstractmethod
    def summary(self, metrics: dict[str, float]) -> str:
        """The evaluation's headline metrics in one line."""

    @abstractmethod
    def report_rows(self, metrics: dict[str, float], names: Sequence[str]) -> list[list[str]]:
        """The task's section of the evaluation report, one table row per line."""
