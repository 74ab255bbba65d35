"""Pass 1 of prep over one input: row checks batch by batch, keeping a compact row index.

A `Scan` reads batches and keeps, per valid row, only its position in the input, its line (or
row) number, its label id and a 16-byte blake2b digest of its (text, pair): about 40 bytes a
row, whatever the texts' length. Duplicate, conflict and leakage checks compare those digests,
not texts. Pass 2 (`ftpipe.data.shards`) reads the input again for the texts of the rows kept.
The texts of the few rows an error message quotes are read again too, only when it fails.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from ftpipe.config.schema import DataConfig
from ftpipe.data.parse import Table
from ftpipe.data.sources import no_rows, word_per_line
from ftpipe.data.validate import (
    Examples,
    Tally,
    enforce,
    refuse_label_variants,
    resolve_column,
    row_problems,
    short,
)
from ftpipe.tasks import LabelMap, Task, get_task, text_value
from ftpipe.tasks.alpaca import PROMPT_COLUMN, cell_problem

SCHEME_ROWS = 2000
"""Rows whose raw labels the tag scheme is detected on."""

Reread = Callable[[], Iterable[Table]]
"""Reads the input again from its start, batch by batch (for the texts a message quotes)."""


def row_key(text: str, pair: str | None) -> bytes:
    """16-byte blake2b digest identifying a row's content: its text, and its pair if any."""
    data = text.encode("utf-8", "surrogatepass")
    if pair is not None:  # length-prefixed, so ("ab", "c") and ("a", "bc") differ
        data = len(data).to_bytes(8, "little") + data + pair.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass(frozen=True)
class Index:
    """The valid rows of one input, without their texts, with drop counts by kind.

    Attributes:
        source: The input as the user named it.
        positions: Per row, its position among all rows the reader yields (int64).
        numbers: Per row, its line (or row) number (int64).
        labels: Per row, an id into `label_names` (int32).
        label_names: The label of each id ("" for unlabelled tasks).
        keys: Per row, `row_key` of its text and pair (16-byte strings).
        groups: Per row, a small integer standing for its key within this input (int64):
            equal keys, equal groups. Integers sort much faster than keys.
        unit: "line" or "row", for locations.
        text_column: The column the texts are in (Alpaca rows: their rendered prompts, the
            column `ftpipe.tasks.alpaca.PROMPT_COLUMN` the reader adds).
        pair_column: The column the second texts are in, or None.
        task: The task that read the rows (it reads a text cell back as text).
        dropped: Rows dropped so far, by kind.
        repaired: Tags repaired (`data.repair_spans`), for tagged words.
        scheme: The tag scheme detected on the first rows, for tagged words (IOB2, ...).
    """

    source: str
    positions: np.ndarray
    numbers: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    keys: np.ndarray
    groups: np.ndarray
    unit: str
    text_column: str
    pair_column: str | None
    task: Task
    dropped: Counter[str]
    repaired: int = 0
    scheme: str | None = None

    def __len__(self) -> int:
        return len(self.positions)

    def where(self, row: int) -> str:
        """Where a row is in its input: "line 12" or "row 12"."""
        return f"{self.unit} {self.numbers[row]}"

    def label_counts(self) -> Counter[str]:
        """Rows per label, for the labels that have rows."""
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return Counter({n: int(c) for n, c in zip(self.label_names, counts, strict=True) if c})

    def class_counts(self, task: Task) -> Counter[str]:
        """Rows holding each class: per label, or per tag for tagged words."""
        counts: Counter[str] = Counter()
        for name, rows in self.label_counts().items():
            counts.update(dict.fromkeys(task.classes([name]), rows))
        return counts

    def strata(self, task: Task, labels: LabelMap) -> np.ndarray:
        """Each row's stratum id for stratified splits and samples (its class, for labels)."""
        if not len(self.label_names):
            return np.zeros(0, dtype=np.int64)
        return task.strata(self.label_names, labels)[self.labels]

    def take(self, rows: np.ndarray, dropped: Counter[str]) -> Index:
        """The rows at the given (ascending) indices, carrying the given drop counts."""
        return replace(
            self,
            positions=self.positions[rows],
            numbers=self.numbers[rows],
            labels=self.labels[rows],
            keys=self.keys[rows],
            groups=self.groups[rows],
            dropped=dropped,
        )

    def without(self, mask: np.ndarray, kind: str) -> Index:
        """A copy without the rows where `mask` is true, counted as dropped of `kind`."""
        dropped = self.dropped + Counter({kind: int(mask.sum())})
        return self.take(np.flatnonzero(~mask), dropped)


class Scan:
    """Check an input's rows batch by batch (`add`), then as a whole (`finish`)."""

    def __init__(
        self, source: str, config: DataConfig, known_labels: list[str] | None, known_from: str
    ) -> None:
        self.source, self.config = source, config
        self.known_labels, self.known_from = known_labels, known_from
        self.task = task = get_task(config.task)
        # In CoNLL files each word is on its own line, so a word's problem names its line.
        self.word_lines = word_per_line(source, config)
        self.repaired = 0
        self.scheme_sample: list = []
        second = getattr(config, task.second_text_key)  # a pair's second text, or a completion
        # Alpaca rows: the instruction is the text, the output the completion, and the input
        # an optional third column; the text trained on is the prompt the reader rendered.
        self.alpaca = config.instruction_column is not None
        text_key = "data.instruction_column" if self.alpaca else "data.text_column"
        self.wanted = {"text": (config.text_column, text_key)}
        if second is not None:
            self.wanted["pair"] = (second, f"data.{task.second_text_key}")
        if task.labelled:
            self.wanted["label"] = (config.label_column, "data.label_column")
        if self.alpaca:
            self.wanted["input"] = (config.input_column, "data.input_column")
        self.resolved: dict[str, str | None] = dict.fromkeys(self.wanted)
        self.names: dict[str, None] = {}
        self.rows, self.unit = 0, "line"
        self.positions, self.numbers, self.labels = array("q"), array("q"), array("i")
        self.keys = bytearray()
        self.label_ids: dict[str, int] = {}
        self.problems, self.variants = Tally(), Tally()

    def add(self, table: Table) -> None:
        """Check one batch; keep its valid rows in the index."""
        self.names.update(dict.fromkeys(c for c in table.columns if c != PROMPT_COLUMN))
        self.rows += len(table)
        self.unit = table.unit
        used: dict[str, str] = {}
        for role, (wanted, key) in self.wanted.items():
            if self.resolved[role] is None:
                self.resolved[role] = resolve_column(self.source, list(self.names), wanted, key)
            used[role] = self.resolved[role] or str(wanted)  # unresolved: all missing for now
        n = len(table)
        columns = {name: table.columns.get(name, [None] * n) for name in used.values()}
        lines = table.numbers if self.word_lines else None
        cells = self.task.read_cells(
            columns[used["text"]],
            columns[used["label"]] if "label" in used else None,
            table.locations,
            lines,
            self.config,
        )
        self.repaired += cells.repaired
        if self.task.pretokenized and len(self.scheme_sample) < SCHEME_ROWS:
            self.scheme_sample += columns[used["label"]][: SCHEME_ROWS - len(self.scheme_sample)]
        texts, problems = cells.texts, cells.problems
        if self.alpaca:
            texts, problems = table.columns[PROMPT_COLUMN], _alpaca_problems(table, used, columns)
        batch = Examples(
            source=self.source,
            texts=texts,
            pairs=[text_value(v) for v in columns[used["pair"]]] if "pair" in used else None,
            labels=cells.labels,
            locations=table.locations,
            problems=problems,
            lines=lines,
        )
        view = replace(table, columns=columns)
        bad = set()
        for problem in row_problems(
            view, list(used.values()), batch, self.config, self.known_labels, self.known_from
        ):
            bad.add(problem.index)
            tally = self.variants if problem.kind == "label_variant" else self.problems
            tally.add(problem.kind, problem.reason)
        pairs = batch.pairs
        for i in range(n):
            if i in bad:
                continue
            self.positions.append(table.start + i)
            self.numbers.append(table.numbers[i])
            name = batch.labels[i] or ""
            self.labels.append(self.label_ids.setdefault(name, len(self.label_ids)))
            self.keys += row_key(batch.texts[i], None if pairs is None else pairs[i])

    def finish(self, reread: Reread) -> Index:
        """Apply the whole-input checks and policies; return the valid rows.

        Args:
            reread: Reads the input again, for the texts an error message quotes.

        Raises:
            DataError: On an empty input, a missing column, a label variant, or invalid rows
                under a `fail` policy.
        """
        if not self.rows:
            raise no_rows(self.source)
        for role, (wanted, key) in self.wanted.items():
            if self.resolved[role] is None and role != "input":  # Alpaca's input is optional
                resolve_column(self.source, list(self.names), wanted, key, strict=True)
        refuse_label_variants(self.source, self.variants, self.known_from)
        policy = self.config.on_error
        dropped = enforce(self.source, self.problems, policy, "data.on_error=drop")
        keys = np.frombuffer(self.keys, dtype="S16")
        index = Index(
            source=self.source,
            positions=np.frombuffer(self.positions, dtype=np.int64),
            numbers=np.frombuffer(self.numbers, dtype=np.int64),
            labels=np.frombuffer(self.labels, dtype=np.int32),
            label_names=tuple(self.label_ids),
            keys=keys,
            groups=np.unique(keys, return_inverse=True)[1].reshape(-1).astype(np.int64),
            unit=self.unit,
            text_column=PROMPT_COLUMN if self.alpaca else str(self.resolved["text"]),
            pair_column=self.resolved.get("pair"),
            task=self.task,
            dropped=dropped,
            repaired=self.repaired,
            scheme=self.task.tag_scheme(self.scheme_sample),
        )
        index = _drop_conflicts(index, policy, reread)
        if self.config.duplicates != "keep":
            index = _drop_duplicates(index, self.config.duplicates, reread)
        return index


def _alpaca_problems(
    table: Table, used: dict[str, str], columns: dict[str, list]
) -> dict[int, tuple[str, str]]:
    """By row, why an Alpaca row's instruction, input and output cells cannot be trained on."""
    names = (used["text"], used["input"], used["pair"])
    instructions, inputs, outputs = (columns[name] for name in names)
    problems = {}
    for i, where in enumerate(table.locations):
        if problem := cell_problem((instructions[i], inputs[i], outputs[i]), names, where):
            problems[i] = problem
    return problems


def texts_at(index: Index, rows: list[int], reread: Reread) -> dict[int, str]:
    """The texts of a few rows of the index (by row), read again from the input."""
    wanted = {int(index.positions[row]): row for row in rows}
    found: dict[int, str] = {}
    for table in reread():
        column = table.columns.get(index.text_column, [])
        for position in range(table.start, table.start + len(table)):
            if position in wanted:
                found[wanted[position]] = index.task.text_of(column[position - table.start])
        if len(found) == len(wanted):
            break
    return found


def _drop_conflicts(index: Index, policy: str, reread: Reread) -> Index:
    """Every row of a text that appears with more than one label."""
    if not len(index):
        return index
    group = index.groups
    width = max(len(index.label_names), 1)
    distinct = np.unique(group.astype(np.int64) * width + index.labels) // width
    mask = np.bincount(distinct, minlength=int(group.max()) + 1)[group] > 1

    def describe(row: int, text: str) -> str:
        names = sorted({index.label_names[i] for i in index.labels[group == group[row]]})
        return (
            f"{index.where(row)}: text {text} has conflicting labels ({', '.join(names)}; "
            f"label here {index.label_names[index.labels[row]]!r})"
        )

    return _drop_rows(index, mask, "conflicting_label", policy, "data.on_error=drop", reread,
                      describe)  # fmt: skip


def _drop_duplicates(index: Index, policy: str, reread: Reread) -> Index:
    """Every repeat of an earlier row with the same text (and so, by now, the same label)."""
    if not len(index):
        return index
    _, first, group = np.unique(index.groups, return_index=True, return_inverse=True)
    earlier = first[group.reshape(-1)]
    mask = earlier != np.arange(len(index))

    def describe(row: int, text: str) -> str:
        return f"{index.where(row)}: exact duplicate of {index.where(earlier[row])} ({text})"

    return _drop_rows(index, mask, "duplicate", policy, "data.duplicates=drop", reread, describe)


def _drop_rows(
    index: Index,
    mask: np.ndarray,
    kind: str,
    policy: str,
    fix: str,
    reread: Reread,
    describe: Callable[[int, str], str],
) -> Index:
    """Drop the rows in `mask` as `kind`, or, under policy `fail`, refuse and list a few.

    Each listed row is described from its row number and its shortened text, read back from
    the source.
    """
    if not mask.any():
        return index
    tally = Tally(kinds=Counter({kind: int(mask.sum())}))
    if policy == "fail":
        rows = np.flatnonzero(mask)[: Tally.LISTED].tolist()
        texts = texts_at(index, rows, reread)
        tally.first = [describe(row, short(texts.get(row, ""))) for row in rows]
    enforce(index.source, tally, policy, fix)
    return index.without(mask, kind)


def drop_leakage(rows: Index, held_out: Index, policy: str, held_out_name: str = "eval") -> Index:
    """Remove (or fail on) rows whose text also appears in a held-out set.

    Leakage inflates the held-out set's metrics, so `rows` (train, or eval against test) lose
    the rows and the held-out set keeps them.

    Args:
        rows: The rows that may not share a text with `held_out`.
        held_out: The held-out set.
        policy: `data.on_error`.
        held_out_name: The held-out split's name, for messages: "eval" or "test".
    """
    mask = np.isin(rows.keys, held_out.keys)
    if not mask.any():
        return rows
    tally = Tally(kinds=Counter({"leakage": int(mask.sum())}))
    for row in np.flatnonzero(mask)[: Tally.LISTED].tolist():
        match = int(np.flatnonzero(held_out.keys == rows.keys[row])[-1])
        tally.first.append(
            f"{rows.where(row)}: the same text is in the {held_out_name} set ({held_out.source} "
            f"{held_out.where(match)}), which would inflate {held_out_name} metrics"
        )
    enforce(rows.source, tally, policy, "data.on_error=drop")
    return rows.without(mask, "leakage")
