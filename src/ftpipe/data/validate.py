"""Validate rows, naming every bad one: the per-row checks and the failure messages.

Each check yields `Problem`s that carry the row's location. The policy then either fails with
one paragraph listing the first problems and the fix (`data.on_error=fail`), or drops the rows
and counts them by kind (`drop`). Exact duplicates have their own policy (`data.duplicates`),
because they are common in real data and harmless to drop.

The per-row checks run batch by batch during prep's first pass (`ftpipe.data.scan`), which
also runs the whole-input checks (conflicting labels, duplicates, leakage) on digests of the
texts.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ftpipe.config.schema import DataConfig
from ftpipe.data.parse import Table
from ftpipe.errors import DataError
from ftpipe.tasks import SCALARS, RowView, Task, get_task

if TYPE_CHECKING:  # the scan builds on this module's row checks
    from ftpipe.data.scan import Index

MAX_LISTED = 8
"""How many problems an error message lists before it says 'and N more'."""


ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
"""Invisible characters a label may carry by accident (zero-width spaces and joiners, BOM)."""


@dataclass(frozen=True)
class Problem:
    """One invalid row: its index in the examples checked, its kind, and a sentence about it."""

    index: int
    kind: str
    reason: str


@dataclass(frozen=True)
class Examples:
    """One batch of an input's rows as the row checks read them, column-wise."""

    source: str
    texts: list[str]
    pairs: list[str] | None
    labels: list[str | None]
    locations: list[str]
    problems: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    """By row, a problem found while reading its cells (`ftpipe.tasks.Task.read_cells`)."""
    lines: list[int] | None = None
    """For files with one word per line (CoNLL), each row's first line; None otherwise."""


class Tally:
    """Problems found by one check: counted by kind, the first `LISTED` kept for a message."""

    LISTED = MAX_LISTED

    def __init__(self, kinds: Counter[str] | None = None) -> None:
        self.kinds: Counter[str] = kinds if kinds is not None else Counter()
        self.first: list[str] = []

    def add(self, kind: str, reason: str) -> None:
        """Count one problem."""
        self.kinds[kind] += 1
        if len(self.first) < self.LISTED:
            self.first.append(reason)

    @property
    def count(self) -> int:
        """How many problems were found."""
        return self.kinds.total()


def enforce(source: str, tally: Tally, policy: str, fix: str) -> Counter[str]:
    """Apply a policy: `fail` raises naming the rows; `drop` returns the counts to drop.

    Raises:
        DataError: Under `fail`, if the tally holds problems.
    """
    if tally.count and policy == "fail":
        listed = "; ".join(tally.first[:MAX_LISTED])
        more = f"; and {tally.count - MAX_LISTED} more" if tally.count > MAX_LISTED else ""
        rows = "row" if tally.count == 1 else "rows"
        raise DataError(
            f"{source} has {tally.count} invalid {rows} ({format_counts(tally.kinds)}): "
            f"{listed}{more}. Fix these rows, or set {fix} to drop them and report the counts."
        )
    return Counter(tally.kinds)


def check_trainable(rows: Index, task: Task) -> None:
    """Fail if fewer than two classes are left to train on in a scan's valid rows.

    Raises:
        DataError: If the rows hold fewer than two labels (tags, for tagged words).
    """
    classes = sorted(rows.class_counts(task))
    if len(classes) < 2:
        found = f"only the label {classes[0]!r}" if classes else "no rows"
        raise DataError(
            f"{rows.source} has {found} left after validation (dropped: "
            f"{format_counts(rows.dropped) or 'none'}), but a classifier needs at least two "
            "classes. Check data.label_column, or add examples of the other classes."
        )


def label_key(name: str) -> str:
    """What a label is once case, width, accents and invisible characters are set aside.

    NFKC folds full-width and compatibility forms, case folding folds case, zero-width
    characters are removed, and so are combining marks (after NFD), so `POS`, `ｐｏｓ`, `p\u200bos`
    and `pós` all give `pos`.
    """
    folded = unicodedata.normalize("NFKC", name).casefold().translate(ZERO_WIDTH)
    return "".join(c for c in unicodedata.normalize("NFD", folded) if not unicodedata.combining(c))


def label_variants(counts: Mapping[str, int]) -> list[list[tuple[str, int]]]:
    """Groups of two or more labels with the same `label_key`, each label with its row count."""
    groups: dict[str, list[str]] = {}
    for name in sorted(counts):
        groups.setdefault(label_key(name), []).append(name)
    return [[(name, counts[name]) for name in names] for names in groups.values() if len(names) > 1]


def refuse_label_variants(source: str, variants: Tally, known_from: str) -> None:
    """A label that only resembles an allowed one is a typo, never a row to drop quietly.

    Raises:
        DataError: If `variants` holds any row, whatever `data.on_error` says.
    """
    if variants.count:
        listed = "; ".join(variants.first)
        more = f"; and {variants.count - MAX_LISTED} more" if variants.count > MAX_LISTED else ""
        raise DataError(
            f"{source} has {variants.count} row(s) whose label differs from an allowed one only "
            f"in case, width, accents or invisible characters: {listed}{more}. Write these "
            f"labels exactly as in {known_from} (for example lower-cased, without zero-width "
            "spaces), or declare the variant as a label of its own in data.labels."
        )


def resolve_column(
    source: str, names: list[str], wanted: str | int, key: str, strict: bool = False
) -> str | None:
    """The name of the column a config key means, among an input's column names.

    Args:
        source: The input, for messages.
        names: Its column names, in order.
        wanted: The configured name, or a 0-based index.
        key: The config key, for messages.
        strict: Raise rather than return None when there is no such column.

    Raises:
        DataError: With `strict`, if the column does not exist.
    """
    if isinstance(wanted, int) and str(wanted) not in names:
        if wanted < len(names):
            return names[wanted]
        if not strict:
            return None
        raise DataError(
            f"{source} has {len(names)} columns, so {key}={wanted} (a 0-based index) does "
            f"not exist. Set {key} to an index below {len(names)}."
        )
    if str(wanted) in names:
        return str(wanted)
    if not strict:
        return None
    listed = ", ".join(repr(n) for n in names) or "none"
    raise DataError(
        f"{source} has no column {wanted!r} ({key}); its columns are {listed}. "
        f"Set {key} to one of them, or data.has_header=false if the file has no header line."
    )


def row_problems(
    table: Table,
    used: list[str],
    examples: Examples,
    config: DataConfig,
    known_labels: list[str] | None,
    known_from: str,
) -> Iterable[Problem]:
    """The first problem of each bad row of a table (batch), in row order."""
    # Format first (how the row was stored), then the task's content checks, then size.
    task = get_task(config.task)
    known = set(known_labels) if known_labels is not None else None
    resembles = {label_key(name): name for name in known or ()}
    pairs = examples.pairs
    # Lists (tagged words, conversations) are read and checked in the task's `read_cells`.
    lists = task.list_cells(config)  # used is text, then a second text, then the label
    listed = {0} if "text" in lists else set()
    listed |= {len(used) - 1} if "label" in lists else set()
    scalars = [c for j, c in enumerate(used) if j not in listed]
    lines = examples.lines
    for i, where in enumerate(examples.locations):
        second = pairs[i] if pairs is not None else None
        body = examples.texts[i] + (second or "")
        name = examples.labels[i]
        nested = [c for c in scalars if not isinstance(table.columns[c][i], SCALARS)]
        if table.errors[i]:
            yield Problem(i, "malformed", f"{where}: {table.errors[i]}")
        elif i in examples.problems:
            yield Problem(i, *examples.problems[i])
        elif nested:
            kind = type(table.columns[nested[0]][i]).__name__
            yield Problem(i, "malformed", f"{where}: column {nested[0]!r} holds a {kind}, not text")
        elif _has_bad_bytes(body) or _has_bad_bytes(name or ""):
            yield Problem(
                i, "not_utf8", f"{where}: bytes that are not valid UTF-8; re-save the file as UTF-8"
            )
        elif problem := task.row_problem(
            RowView(where, examples.texts[i], second, name, tuple(used), lines and lines[i]),
            known,
            known_from,
        ):
            if problem[0] == "unknown_label" and (like := resembles.get(label_key(name or ""))):
                problem = (
                    "label_variant",
                    f"{where}: label {name!r} is a variant of {like!r} ({known_from})",
                )
            yield Problem(i, *problem)
        elif len(body) > config.max_chars:
            yield Problem(
                i,
                "too_long",
                f"{where}: {len(body)} characters, over data.max_chars={config.max_chars}",
            )


def _has_bad_bytes(value: str) -> bool:
    # Undecodable bytes were kept as lone surrogates (U+DC80..U+DCFF) by the reader.
    return not value.isascii() and any("\udc80" <= ch <= "\udcff" for ch in value)


def short(text: str, limit: int = 60) -> str:
    """A text for a message: quoted, cut at `limit` characters."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def format_counts(counter: Counter[str]) -> str:
    """`kind: n, kind: n` in a stable order, for messages and logs."""
    return ", ".join(f"{kind}: {n}" for kind, n in sorted(counter.items()))
