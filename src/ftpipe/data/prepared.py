"""Prep's outputs: their layout (`PrepDir`), the rows per split, and padded batches.

`PrepDir.check_config` is what train, tune and evaluate call first: prepared data made with
another config (other inputs, columns, labels, task, tokenizer or max_length) is refused rather
than silently trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from ftpipe.artifacts import is_uri, localize
from ftpipe.config import Config
from ftpipe.data.fingerprint import COVERED_WHEN_SET, IGNORED_DATA_KEYS
from ftpipe.errors import ConfigError, DataError
from ftpipe.tasks import LabelMap, Task, get_task, pad_rows

UNCOMPARED_KEYS = ("data.shard_rows", *(f"data.{k}" for k in IGNORED_DATA_KEYS))
"""Recorded keys that change how prep writes its files, not what they hold (an older prep may
have recorded a key the fingerprint now leaves out). The inputs are compared by name apart."""

TOKENIZATION_KEYS = ("data.max_length", "model.name", "model.revision")
"""Recorded keys that only change the token ids: evaluate re-tokenizes the raw texts itself."""

PATH_KEYS = ("data.train", "data.eval", "data.test", "model.name")
"""Keys naming a file or directory: equal when they resolve to the same local path."""

INPUTS = ("train", "eval", "test")
"""The inputs prep may read, by role (`data.<role>`)."""

TRAINING_SPLITS = ("train", "eval")
"""The splits tune and train read. The test split, when there is one, is evaluate's alone: the
model is never selected on it, so the promotion gate's interval on it means what it says."""


LIST_COLUMNS = {
    "input_ids": "input_ids",
    "token_type_ids": "token_type_ids",
    "token_labels": "token_labels",
    "word_ids": "word_ids",
}
"""`Split` fields read from per-token list columns of the shards, by field."""

ARRAY_COLUMNS = {"labels": "label", "prompt_lengths": "prompt_length", "sentences": "sentence"}
"""`Split` fields read from per-row integer columns of the shards, by field."""


@dataclass(frozen=True)
class Split:
    """One prepared split: variable-length token ids, optional token types, label ids.

    Unlabelled tasks leave `labels` unused; `prompt_lengths`, when present, says how many
    leading tokens of each row are prompt (kept out of a language model's loss). Tagged words
    (`ftpipe.data.words`) carry per token their label and scored word, and per row its
    sentence.
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray
    prompt_lengths: np.ndarray | None = None
    token_labels: list[list[int]] | None = None
    word_ids: list[list[int]] | None = None
    sentences: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Token count of every row."""
        return np.fromiter(map(len, self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def concat(self, other: Split) -> Split:
        """These rows followed by `other`'s (sentence numbers of `other` shifted past these)."""
        joined = {}
        for field in fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if mine is None or theirs is None:
                joined[field.name] = None
            elif field.name == "sentences":
                joined[field.name] = np.concatenate([mine, theirs + (mine.max(initial=-1) + 1)])
            elif isinstance(mine, np.ndarray):
                joined[field.name] = np.concatenate([mine, theirs])
            else:
                joined[field.name] = mine + theirs
        return Split(**joined)

    def subset(self, rows: np.ndarray) -> Split:
        """The rows at the given indices."""
        picked = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None or isinstance(value, np.ndarray):
                picked[field.name] = None if value is None else value[rows]
            else:
                picked[field.name] = [value[i] for i in rows]
        return Split(**picked)


@dataclass(frozen=True)
class PrepDir:
    """A prep output directory: the one place that knows its layout.

    prep writes it; recommend, train, tune, evaluate and tracking read it through this class,
    so none of them spells a file name or guesses the task from which files exist.
    """

    path: Path

    @classmethod
    def open(cls, directory: str | Path) -> PrepDir:
        """A complete prep output (on a cluster `directory` may be an object-storage URI).

        Raises:
            DataError: If the directory is not a complete prep output.
        """
        prep = cls(localize(directory))
        if not prep.fingerprint_path.exists():
            raise DataError(
                f"{prep.path} is not a prep output (no fingerprint.json). Run `ftpipe prep` with "
                "the same config first."
            )
        return prep

    @property
    def label_map_path(self) -> Path:
        """label_map.json: id2label / label2id (labelled tasks only)."""
        return self.path / "label_map.json"

    @property
    def stats_path(self) -> Path:
        """stats.json: rows per split and label, drops, token lengths, shift signals."""
        return self.path / "stats.json"

    @property
    def fingerprint_path(self) -> Path:
        """fingerprint.json: the fingerprint and everything it covers."""
        return self.path / "fingerprint.json"

    def split_path(self, name: str) -> Path:
        """The Parquet shards of a split (`train`, `eval` or `test`)."""
        return self.path / name

    @cached_property
    def stats(self) -> dict[str, Any]:
        """The statistics prep computed."""
        return json.loads(self.stats_path.read_text())

    @property
    def task(self) -> Task:
        """The task the data was prepared for."""
        return get_task(self.stats["task"])

    @property
    def labels(self) -> LabelMap | None:
        """The label map, for labelled tasks."""
        return LabelMap.load(self.label_map_path) if self.task.labelled else None

    @property
    def fingerprint(self) -> str:
        """The data fingerprint."""
        return json.loads(self.fingerprint_path.read_text())["fingerprint"]

    @property
    def rows(self) -> dict[str, int]:
        """Rows per split."""
        return {name: split["rows"] for name, split in self.stats["splits"].items()}

    @property
    def has_test(self) -> bool:
        """Whether prep held out a test split (`data.test` or `data.test_fraction`)."""
        return "test" in self.stats["splits"]

    @classmethod
    def check_config(cls, config: Config, stage: str, tokenization: bool = True) -> None:
        """Refuse prepared data made with another config; see `check_matches`.

        What train, tune and evaluate call first. A local `data.output_dir` that holds no prep
        output passes: the stage's own reading then says to run prep (or recommend) first.

        Raises:
            ConfigError: If the data was prepared with different data keys.
        """
        directory = config.data.output_dir
        if not is_uri(directory) and not cls(localize(directory)).fingerprint_path.exists():
            return
        cls.open(directory).check_matches(config, stage, tokenization)

    def recorded_config(self) -> dict[str, Any]:
        """The config keys the data was prepared with, by dotted path (from fingerprint.json).

        The inputs (`data.train`, `data.eval`, `data.test`), every data key the fingerprint
        covers but `data.shard_rows`, and the tokenizer's model; keys an older prep did not
        record are absent, but for those recorded only when set, which were at their defaults.
        """
        record = json.loads(self.fingerprint_path.read_text())
        data = record.get("data", {})
        keys = {f"data.{key}": value for key, value in data.items()}
        keys |= {f"data.{key}": value for key, value in COVERED_WHEN_SET.items() if key not in data}
        keys |= {f"model.{key}": value for key, value in record.get("model", {}).items()}
        keys = {key: value for key, value in keys.items() if key not in UNCOMPARED_KEYS}
        if "inputs" in record:
            for role in INPUTS:
                keys[f"data.{role}"] = record["inputs"].get(role, {}).get("source")
        return keys

    def check_matches(self, config: Config, stage: str, tokenization: bool = True) -> None:
        """Refuse a config whose data keys differ from those the data was prepared with.

        Args:
            config: The config the stage was given.
            stage: The stage's name, for the message.
            tokenization: Also compare the keys that only change token ids (train and tune
                read them; evaluate does not).

        Raises:
            ConfigError: Naming each differing key with both values, and the fix.
        """
        given = config.model_dump(mode="json")
        differences = []
        layout = json.loads(self.fingerprint_path.read_text()).get("layout", 1)
        if layout != get_task(config.data.task).prep_layout:
            differences.append(
                f"its rows are laid out as version {layout}, and this ftpipe reads version "
                f"{get_task(config.data.task).prep_layout} for data.task={config.data.task}"
            )
        for key, recorded in self.recorded_config().items():
            if not tokenization and key in TOKENIZATION_KEYS:
                continue
            section, _, name = key.partition(".")
            if name not in given.get(section, {}):
                continue  # a key this version no longer has
            value = given[section][name]
            if not _same(key, value, recorded):
                differences.append(
                    f"{key} is {_show(value)} here but was {_show(recorded)} for prep"
                )
        if differences:
            raise ConfigError(
                f"The prepared data in data.output_dir={config.data.output_dir} was made with a "
                f"different config: {'; '.join(differences)}. `ftpipe {stage}` would silently use "
                "the old data. "
                "Re-run `ftpipe prep` with this config, or point data.output_dir at a directory "
                "that prep wrote for it."
            )


def _same(key: str, value: Any, recorded: Any) -> bool:
    if value == recorded:
        return True
    if key not in PATH_KEYS or not isinstance(value, str) or not isinstance(recorded, str):
        return False
    if any(is_uri(v) or v.startswith("hf:") for v in (value, recorded)):
        return False
    return Path(value).expanduser().resolve() == Path(recorded).expanduser().resolve()


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class PreparedData:
    """Everything prep wrote that training needs (`labels` is None for unlabelled tasks)."""

    splits: dict[str, Split]
    labels: LabelMap | None
    fingerprint: str
    stats: dict
    task: Task


def load_prepared(directory: str | Path) -> PreparedData:
    """Load a prep output directory's training splits (`TRAINING_SPLITS`: never the test split).

    Raises:
        DataError: If the directory is not a complete prep output.
    """
    prep = PrepDir.open(directory)
    splits = {name: read_split(prep, name) for name in TRAINING_SPLITS}
    return PreparedData(splits, prep.labels, prep.fingerprint, prep.stats, prep.task)


def read_split(prep: PrepDir, name: str) -> Split:
    """One split's token ids and targets, as prep stored them."""
    table = pq.read_table(prep.split_path(name))
    columns = table.column_names
    lists = {
        key: table.column(column).to_pylist() if column in columns else None
        for key, column in LIST_COLUMNS.items()
    }
    arrays = {
        key: table.column(column).to_numpy().astype(np.int64) if column in columns else None
        for key, column in ARRAY_COLUMNS.items()
    }
    return Split(**lists, **arrays)  # type: ignore[arg-type]


def batches(
    split: Split, batch_size: int, pad_id: int, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield (row indices, input tensors) padded to each batch's longest row.

    Args:
        split: The rows.
        batch_size: Rows per batch.
        pad_id: Token id used for padding (masked out by attention_mask).
        order: Row order; defaults to the stored order.
    """
    order = np.arange(len(split)) if order is None else order
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = pad_rows([split.input_ids[i] for i in rows], pad_id)
        tensors = {"input_ids": ids, "attention_mask": mask}
        if split.token_type_ids is not None:
            tensors["token_type_ids"] = pad_rows([split.token_type_ids[i] for i in rows], 0)[0]
        yield rows, tensors
