"""Validate raw tables into clean examples, naming every bad row.

Each check yields `Problem`s that carry the file and the row's location. The policy then
either fails with one paragraph listing the first problems and the fix (`data.on_error=fail`),
or drops the rows and counts them by kind (`drop`). Exact duplicates have their own policy
(`data.duplicates`), because they are common in real data and harmless to drop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ftpipe.config.schema import DataConfig
from ftpipe.data.sources import BAD_JSON, EXTRA_FIELDS, Table
from ftpipe.errors import DataError

MAX_LISTED = 8
"""How many problems an error message lists before it says 'and N more'."""


@dataclass(frozen=True)
class Problem:
    """One invalid row: where it is, what kind of problem, and a sentence about it."""

    index: int
    location: str
    kind: str
    reason: str


@dataclass
class Examples:
    """Validated rows of one input, column-wise."""

    source: str
    texts: list[str]
    pairs: list[str] | None
    labels: list[str]
    locations: list[str]
    dropped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.texts)

    def keys(self) -> list[tuple[str, str | None]]:
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


def validate_table(table: Table, config: DataConfig, known_labels: list[str] | None) -> Examples:
    """Check each row of a table and apply the duplicate and invalid-row policies.

    Args:
        table: The rows as read.
        config: The data section (columns, limits, policies).
        known_labels: Labels a row may have: the declared set, or for eval the training set;
            None accepts any label.

    Returns:
        The examples that passed, with drop counts by kind.

    Raises:
        DataError: On a missing column, or on invalid rows under `on_error=fail`.
    """
    text = _column(table, config.text_column, "data.text_column")
    pair = None
    if config.text_pair_column is not None:
        pair = _column(table, config.text_pair_column, "data.text_pair_column")
    label = _column(table, config.label_column, "data.label_column")
    examples = Examples(
        source=table.source,
        texts=["" if v is None else str(v) for v in table.columns[text]],
        pairs=None if pair is None else ["" if v is None else str(v) for v in table.columns[pair]],
        labels=[_label_name(v) for v in table.columns[label]],
        locations=table.locations,
    )
    problems = list(_row_problems(table, examples, text, pair, label, config, known_labels))
    examples = _enforce(examples, problems, config.on_error, "data.on_error=drop")
    exact, conflicts = _duplicates(examples)
    if config.duplicates != "keep":
        examples = _enforce(examples, exact, config.duplicates, "data.duplicates=drop")
    return _enforce(examples, conflicts, config.on_error, "data.on_error=drop")


def check_single_class(examples: Examples) -> None:
    """Fail if the training data has fewer than two classes left."""
    classes = sorted(set(examples.labels))
    if len(classes) < 2:
        found = f"only the label {classes[0]!r}" if classes else "no rows"
        raise DataError(
            f"{examples.source} has {found} after validation, but a classifier needs at least "
            "two classes. Check data.label_column, or add examples of the other classes."
        )


def drop_leakage(train: Examples, held_out: Examples, policy: str) -> Examples:
    """Remove (or fail on) training rows whose text also appears in the eval set.

    Leakage inflates eval metrics; the eval set is kept as given and train loses the rows.
    """
    where = {key: loc for key, loc in zip(held_out.keys(), held_out.locations, strict=True)}
    problems = [
        Problem(
            i,
            train.locations[i],
            "leakage",
            f"{train.locations[i]}: the same text is in the eval set "
            f"({held_out.source} {where[key]}), which would inflate eval metrics",
        )
        for i, key in enumerate(train.keys())
        if key in where
    ]
    return _enforce(train, problems, policy, "data.on_error=drop")


def _column(table: Table, wanted: str | int, key: str) -> str:
    names = [n for n in table.columns if n not in (EXTRA_FIELDS, BAD_JSON)]
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


def _label_name(value: Any) -> str | None:
    """Labels may be strings or integers; both become their string name."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    name = str(value).strip()
    return name or None


def _row_problems(
    table: Table,
    examples: Examples,
    text: str,
    pair: str | None,
    label: str,
    config: DataConfig,
    known_labels: list[str] | None,
) -> Iterable[Problem]:
    extra = table.columns.get(EXTRA_FIELDS)
    bad_json = table.columns.get(BAD_JSON)
    known = set(known_labels) if known_labels is not None else None
    pairs = examples.pairs
    for i, location in enumerate(examples.locations):
        body = examples.texts[i] + (pairs[i] if pairs is not None else "")
        name = examples.labels[i]
        if bad_json is not None and bad_json[i]:
            yield Problem(i, location, "malformed", f"{location}: {bad_json[i]}")
        elif extra is not None and extra[i]:
            yield Problem(
                i, location, "malformed", f"{location}: {extra[i]} more field(s) than the header"
            )
        elif _has_bad_bytes(body) or _has_bad_bytes(name or ""):
            yield Problem(
                i,
                location,
                "not_utf8",
                f"{location}: bytes that are not valid UTF-8; re-save the file as UTF-8",
            )
        elif not examples.texts[i].strip():
            yield Problem(i, location, "empty_text", f"{location}: text in {text!r} is empty")
        elif pairs is not None and not pairs[i].strip():
            yield Problem(i, location, "empty_text", f"{location}: text in {pair!r} is empty")
        elif name is None:
            yield Problem(i, location, "null_label", f"{location}: label in {label!r} is missing")
        elif known is not None and name not in known:
            allowed = ", ".join(sorted(known))
            yield Problem(
                i,
                location,
                "unknown_label",
                f"{location}: label {name!r} is not one of "
                f"{allowed} (data.labels, or the labels seen in training)",
            )
        elif len(body) > config.max_chars:
            yield Problem(
                i,
                location,
                "too_long",
                f"{location}: {len(body)} characters, over data.max_chars={config.max_chars}",
            )


def _has_bad_bytes(value: str) -> bool:
    # Undecodable bytes were kept as lone surrogates (U+DC80..U+DCFF) by the reader.
    return any("\udc80" <= ch <= "\udcff" for ch in value) if not value.isascii() else False


def _duplicates(examples: Examples) -> tuple[list[Problem], list[Problem]]:
    """Split repeated texts into exact duplicates (same label) and conflicts (other labels)."""
    first: dict[tuple[str, str | None], int] = {}
    labels_of: dict[tuple[str, str | None], set[str]] = {}
    for i, key in enumerate(examples.keys()):
        first.setdefault(key, i)
        labels_of.setdefault(key, set()).add(examples.labels[i])
    exact: list[Problem] = []
    conflicts: list[Problem] = []
    for i, key in enumerate(examples.keys()):
        j = first[key]
        where = examples.locations[i]
        if len(labels_of[key]) > 1:
            seen = ", ".join(sorted(labels_of[key]))
            conflicts.append(
                Problem(
                    i,
                    where,
                    "conflicting_label",
                    f"{where}: text {_short(key[0])} has "
                    f"conflicting labels ({seen}; label here {examples.labels[i]!r})",
                )
            )
        elif j != i:
            exact.append(
                Problem(
                    i,
                    where,
                    "duplicate",
                    f"{where}: exact duplicate of {examples.locations[j]} ({_short(key[0])})",
                )
            )
    return exact, conflicts


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _enforce(examples: Examples, problems: list[Problem], policy: str, fix: str) -> Examples:
    """Apply a policy: `fail` raises naming the rows; `drop` removes them and counts them."""
    if not problems:
        return examples
    if policy == "fail":
        listed = "; ".join(p.reason for p in problems[:MAX_LISTED])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(Counter(p.kind for p in problems).items()))
        raise DataError(
            f"{examples.source} has {len(problems)} invalid rows ({kinds}): {listed}{more}. "
            f"Fix these rows, or set {fix} to drop them and report the counts."
        )
    return examples.without(problems)
