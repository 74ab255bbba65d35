"""Validate raw tables into clean examples, naming every bad row.

Each check yields `Problem`s that carry the row's location. The policy then either fails with
one paragraph listing the first problems and the fix (`data.on_error=fail`), or drops the rows
and counts them by kind (`drop`). Exact duplicates have their own policy (`data.duplicates`),
because they are common in real data and harmless to drop.

A problem's index points into the examples it was computed on, so every check runs on the
output of the previous one and is applied before the next is computed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ftpipe.config.schema import DataConfig
from ftpipe.data.sources import Table
from ftpipe.errors import DataError
from ftpipe.tasks import get_task

MAX_LISTED = 8
"""How many problems an error message lists before it says 'and N more'."""

Key = tuple[str, str | None]


@dataclass(frozen=True)
class Problem:
    """One invalid row: its index in the examples checked, its kind, and a sentence about it."""

    index: int
    kind: str
    reason: str


@dataclass(frozen=True)
class Examples:
    """Validated rows of one input, column-wise, with how many rows were dropped and why."""

    source: str
    texts: list[str]
    pairs: list[str] | None
    labels: list[str]
    locations: list[str]
    dropped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.texts)

    def keys(self) -> list[Key]:
        """Identity of each example for duplicate and leakage checks: (text, pair)."""
        pairs = self.pairs if self.pairs is not None else [None] * len(self.texts)
        return list(zip(self.texts, pairs, strict=True))

    def take(self, indices: list[int], dropped: Counter[str]) -> Examples:
        """Return the rows at `indices`, carrying the given drop counts."""
        return Examples(
            source=self.source,
            texts=[self.texts[i] for i in indices],
            pairs=None if self.pairs is None else [self.pairs[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            locations=[self.locations[i] for i in indices],
            dropped=dropped,
        )

    def without(self, problems: list[Problem]) -> Examples:
        """Return a copy without the rows the problems point at, counting them by kind."""
        by_row = {p.index: p.kind for p in problems}
        keep = [i for i in range(len(self)) if i not in by_row]
        return self.take(keep, self.dropped + Counter(by_row.values()))


def validate_table(
    table: Table, config: DataConfig, known_labels: list[str] | None, known_from: str = ""
) -> Examples:
    """Check each row of a table and apply the invalid-row and duplicate policies.

    Args:
        table: The rows as read.
        config: The data section (columns, limits, policies).
        known_labels: Labels a row may have (the declared set, or for eval the training set);
            None accepts any label.
        known_from: Where `known_labels` came from, for messages.

    Returns:
        The examples that passed, with drop counts by kind.

    Raises:
        DataError: On a missing column, or on invalid rows under `on_error=fail`.
    """
    task = get_task(config.task)
    text = _column(table, config.text_column, "data.text_column")
    pair = label = None
    second = getattr(config, task.second_text_key)  # a pair's second text, or a completion
    if second is not None:
        pair = _column(table, second, f"data.{task.second_text_key}")
    if task.labelled:
        label = _column(table, config.label_column, "data.label_column")
    used = [c for c in (text, pair, label) if c is not None]
    # Rows of unlabelled tasks have no label; "" keeps every label-keyed check a no-op.
    names = [_label_name(v) for v in table.columns[label]] if label else [""] * len(table)
    examples = Examples(
        source=table.source,
        texts=[_text(v) for v in table.columns[text]],
        pairs=None if pair is None else [_text(v) for v in table.columns[pair]],
        labels=names,
        locations=table.locations,
    )
    row_problems = _row_problems(table, used, examples, config, known_labels, known_from)
    examples = _enforce(examples, list(row_problems), config.on_error, "data.on_error=drop")
    examples = _enforce(examples, _conflicts(examples), config.on_error, "data.on_error=drop")
    if config.duplicates != "keep":
        duplicates = _exact_duplicates(examples)
        examples = _enforce(examples, duplicates, config.duplicates, "data.duplicates=drop")
    return examples


def check_trainable(examples: Examples) -> None:
    """Fail if fewer than two classes are left to train on."""
    classes = sorted(set(examples.labels))
    if len(classes) < 2:
        found = f"only the label {classes[0]!r}" if classes else "no rows"
        raise DataError(
            f"{examples.source} has {found} left after validation (dropped: "
            f"{format_counts(examples.dropped) or 'none'}), but a classifier needs at least two "
            "classes. Check data.label_column, or add examples of the other classes."
        )


def drop_leakage(train: Examples, held_out: Examples, policy: str) -> Examples:
    """Remove (or fail on) training rows whose text also appears in the eval set.

    Leakage inflates eval metrics, so train loses the rows and eval keeps them.
    """
    where = dict(zip(held_out.keys(), held_out.locations, strict=True))
    problems = [
        Problem(
            i,
            "leakage",
            f"{train.locations[i]}: the same text is in the eval set "
            f"({held_out.source} {where[key]}), which would inflate eval metrics",
        )
        for i, key in enumerate(train.keys())
        if key in where
    ]
    return _enforce(train, problems, policy, "data.on_error=drop")


def _column(table: Table, wanted: str | int, key: str) -> str:
    names = list(table.columns)
    if isinstance(wanted, int) and str(wanted) not in names:
        if wanted < len(names):
            return names[wanted]
        raise DataError(
            f"{table.source} has {len(names)} columns, so {key}={wanted} (a 0-based index) does "
            f"not exist. Set {key} to an index below {len(names)}."
        )
    if str(wanted) in names:
        return str(wanted)
    listed = ", ".join(repr(n) for n in names) or "none"
    raise DataError(
        f"{table.source} has no column {wanted!r} ({key}); its columns are {listed}. "
        f"Set {key} to one of them, or data.has_header=false if the file has no header line."
    )


SCALARS = (str, int, float, bool, type(None))


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str:
    if _is_missing(value) or not isinstance(value, SCALARS):
        return ""  # empty texts are reported; non-scalars are reported as malformed first
    return value if isinstance(value, str) else str(value)


def _label_name(value: Any) -> str | None:
    """Labels may be strings or integers; both become their string name."""
    if _is_missing(value) or not isinstance(value, SCALARS):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip() or None


def _row_problems(
    table: Table,
    used: list[str],
    examples: Examples,
    config: DataConfig,
    known_labels: list[str] | None,
    known_from: str,
) -> Iterable[Problem]:
    known = set(known_labels) if known_labels is not None else None
    pairs = examples.pairs
    for i, where in enumerate(examples.locations):
        body = examples.texts[i] + (pairs[i] if pairs is not None else "")
        name = examples.labels[i]
        nested = [c for c in used if not isinstance(table.columns[c][i], SCALARS)]
        if table.errors[i]:
            yield Problem(i, "malformed", f"{where}: {table.errors[i]}")
        elif nested:
            kind = type(table.columns[nested[0]][i]).__name__
            yield Problem(i, "malformed", f"{where}: column {nested[0]!r} holds a {kind}, not text")
        elif _has_bad_bytes(body) or _has_bad_bytes(name or ""):
            yield Problem(
                i, "not_utf8", f"{where}: bytes that are not valid UTF-8; re-save the file as UTF-8"
            )
        elif not examples.texts[i].strip():
            yield Problem(i, "empty_text", f"{where}: text in {used[0]!r} is empty")
        elif pairs is not None and not pairs[i].strip():
            yield Problem(i, "empty_text", f"{where}: text in {used[1]!r} is empty")
        elif name is None:
            yield Problem(i, "null_label", f"{where}: label in {used[-1]!r} is missing")
        elif known is not None and name not in known:
            allowed = ", ".join(sorted(known))
            yield Problem(
                i,
                "unknown_label",
                f"{where}: label {name!r} is not one of {allowed} ({known_from})",
            )
        elif len(body) > config.max_chars:
            yield Problem(
                i,
                "too_long",
                f"{where}: {len(body)} characters, over data.max_chars={config.max_chars}",
            )


def _has_bad_bytes(value: str) -> bool:
    # Undecodable bytes were kept as lone surrogates (U+DC80..U+DCFF) by the reader.
    return not value.isascii() and any("\udc80" <= ch <= "\udcff" for ch in value)


def _conflicts(examples: Examples) -> list[Problem]:
    """Every row of a text that appears with more than one label."""
    labels_of: dict[Key, set[str]] = {}
    keys = examples.keys()
    for key, label in zip(keys, examples.labels, strict=True):
        labels_of.setdefault(key, set()).add(label)
    return [
        Problem(
            i,
            "conflicting_label",
            f"{examples.locations[i]}: text {_short(key[0])} has conflicting labels "
            f"({', '.join(sorted(labels_of[key]))}; label here {examples.labels[i]!r})",
        )
        for i, key in enumerate(keys)
        if len(labels_of[key]) > 1
    ]


def _exact_duplicates(examples: Examples) -> list[Problem]:
    """Every repeat of an earlier row with the same text and label."""
    first: dict[Key, int] = {}
    problems = []
    for i, key in enumerate(examples.keys()):
        j = first.setdefault(key, i)
        if j != i:
            problems.append(
                Problem(
                    i,
                    "duplicate",
                    f"{examples.locations[i]}: exact duplicate of {examples.locations[j]} "
                    f"({_short(key[0])})",
                )
            )
    return problems


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def format_counts(counter: Counter[str]) -> str:
    """`kind: n, kind: n` in a stable order, for messages and logs."""
    return ", ".join(f"{kind}: {n}" for kind, n in sorted(counter.items()))


def _enforce(examples: Examples, problems: list[Problem], policy: str, fix: str) -> Examples:
    """Apply a policy: `fail` raises naming the rows; `drop` removes them and counts them."""
    if not problems:
        return examples
    if policy == "fail":
        listed = "; ".join(p.reason for p in problems[:MAX_LISTED])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        rows = "row" if len(problems) == 1 else "rows"
        kinds = format_counts(Counter(p.kind for p in problems))
        raise DataError(
            f"{examples.source} has {len(problems)} invalid {rows} ({kinds}): {listed}{more}. "
            f"Fix these rows, or set {fix} to drop them and report the counts."
        )
    return examples.without(problems)
