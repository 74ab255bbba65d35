"""`data.task: token-classification`: words with one tag each (named entities).

A row is a sentence: a list of words and a list of tags, one per word, in IOB2 (IOB1 and BIOES
are converted on reading). The model is `AutoModelForTokenClassification` with a new head of one
output per tag. Each word's tag trains on its first sub-word (or on every sub-word, with
`data.label_all_subwords`); special tokens and the other sub-words get -100. Prep writes, per
token, its training label (`token_labels`) and which word it scores (`word_ids`: the word's
index on its first sub-word, -1 elsewhere), and per row its sentence (`sentence`): a sentence
longer than `data.max_length` is split into windows, and each of its words is scored in
exactly one of them.

Metrics: entity-level precision, recall and F1 (strict IOB2: a predicted entity counts only when
its type and both boundaries match), micro and per type, plus token accuracy and the token loss;
checkpoints are selected by entity micro-F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ftpipe.tasks.base import (
    CONFUSION,
    Cells,
    Evaluator,
    HeldOutRows,
    Problem,
    Rows,
    RowView,
    ServingTask,
    Tokens,
    pad_targets,
)
from ftpipe.tasks.entities import detect_scheme, entity_types, repair, to_iob2
from ftpipe.tasks.labels import LabelMap
from ftpipe.tasks.token_serving import (
    TaggedText,
    heldout_report,
    prediction_frame,
    tag_metrics,
)

OUTSIDE = "O"
"""The tag of a word outside every entity."""


def word_location(row: RowView | str, line: int | None, word: int) -> str:
    """Where word `word` (0-based) of a row is: its own line in CoNLL files, else its number."""
    where = row.where if isinstance(row, RowView) else row
    if line is not None:
        return f"line {line + word}"
    return f"{where}, word {word + 1}"


def _word_list(value: Any) -> list[str] | None:
    """A cell as a list of strings, or None when it is not one."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return None
    return list(value)


def _stratum(row_label: str) -> str:
    """A sentence's stratum: the entity types it holds, so splits keep each type's share."""
    return "+".join(entity_types(row_label.split(" ")))


def _read_row(
    text: Any, label: Any, where: str, line: int | None, config: Any
) -> tuple[list[str], list[str], Problem | None]:
    """A row's words and tags (BIOES converted to IOB2), or the problem with them."""
    words, tags = _word_list(text), _word_list(label)
    for value, column, listed in ((text, config.text_column, words),
                                  (label, config.label_column, tags)):  # fmt: skip
        if listed is None:
            kind = type(value).__name__
            return [], [], ("malformed", f"{where}: {column!r} holds a {kind}, not a list of "
                            "strings")  # fmt: skip
    assert words is not None and tags is not None
    if not words:
        return [], [], ("empty_text", f"{where}: the sentence has no words")
    if len(words) != len(tags):
        return [], [], ("length_mismatch", f"{where}: {len(words)} words but {len(tags)} tags; "
                        "give every word one tag")  # fmt: skip
    for i, word in enumerate(words):
        if not word or any(ch.isspace() for ch in word):
            return [], [], ("malformed", f"{word_location(where, line, i)}: word {word!r} is "
                            "empty or holds whitespace")  # fmt: skip
    if any(tag[:2] in ("S-", "E-") for tag in tags):
        tags = to_iob2(tags, "BIOES")
    return words, tags, None


def _broken_span(tags: list[str], i: int, where: str, line: int | None) -> Problem:
    after = tags[i - 1] if i else "the sentence start"
    return (
        "broken_span",
        f"{word_location(where, line, i)}: {tags[i]} follows {after}, so it opens no entity in "
        "IOB2 (data.repair_spans=true repairs it to B-)",
    )


class TokenClassification(ServingTask):
    """Named-entity recognition: one tag per word."""

    name: ClassVar[str] = "token-classification"
    model_class: ClassVar[str] = "AutoModelForTokenClassification"
    peft_task_type: ClassVar[str] = "TOKEN_CLS"
    labelled: ClassVar[bool] = True
    new_head: ClassVar[bool] = True
    second_text_key: ClassVar[str] = "text_pair_column"
    metrics: ClassVar[dict[str, bool]] = {
        "entity_f1": True,
        "entity_precision": True,
        "entity_recall": True,
        "token_accuracy": True,
        "loss": False,
    }
    default_metric: ClassVar[str] = "entity_f1"
    gate_metrics: ClassVar[tuple[str, ...]] = ("entity_f1",)
    report_unit: ClassVar[str] = "entity type"
    pretokenized: ClassVar[bool] = True
    per_token_features: ClassVar[bool] = True
    unsupported_strategies: ClassVar[dict[str, str]] = dict.fromkeys(
        ("p-tuning", "prompt-tuning"),
        "prepends virtual tokens to the input, and PEFT's token-classification model then "
        "returns logits for them too, which match no word's tag. Use prefix (virtual keys and "
        "values, no added positions), lora or ia3.",
    )

    def read_cells(
        self,
        texts: list[Any],
        labels: list[Any] | None,
        locations: list[str],
        lines: list[int] | None,
        config: Any,
    ) -> Cells:
        """Words and tags as two lists of equal length, joined by spaces; spans repaired.

        BIOES tags are converted to IOB2 first; an `I-X` that still opens a span (as in IOB1)
        is repaired to `B-X` under `data.repair_spans`, and is a problem otherwise.
        """
        assert labels is not None
        read = Cells([], [], {})
        repaired = 0
        for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
            line = None if lines is None else lines[i]
            words, tags, problem = _read_row(text, label, locations[i], line, config)
            if problem is not None:
                read.problems[i] = problem
            else:
                fixed, changed = repair(tags)
                if changed and not config.repair_spans:
                    read.problems[i] = _broken_span(tags, changed[0], locations[i], line)
                tags = fixed
                repaired += len(changed)
            read.texts.append(" ".join(words))
            read.labels.append(" ".join(tags) if tags else None)
        return Cells(read.texts, read.labels, read.problems, repaired)

    def text_of(self, cell: Any) -> str:
        """A valid row's words, joined by single spaces."""
        return " ".join(_word_list(cell) or ())

    def tag_scheme(self, labels: list[Any]) -> str | None:
        """IOB2, IOB1, BIOES or IO, as `ftpipe.tasks.entities.detect_scheme` tells them."""
        return detect_scheme(tags for tags in map(_word_list, labels) if tags is not None)

    def classes(self, row_labels: Sequence[str]) -> list[str]:
        """Every tag seen in any row."""
        return sorted({tag for row in row_labels for tag in row.split(" ")})

    def strata(self, row_labels: Sequence[str], labels: LabelMap) -> np.ndarray:
        """Sentences are stratified by the set of entity types they hold."""
        strata = [_stratum(row) for row in row_labels]
        ids = {name: i for i, name in enumerate(sorted(set(strata)))}
        return np.array([ids[name] for name in strata], dtype=np.int64)

    def row_problem(self, row: RowView, known: set[str] | None, known_from: str) -> Problem | None:
        """A tag outside the known set (`data.labels`, or train's tags for held-out files)."""
        if known is None or row.label is None:
            return None
        for i, tag in enumerate(row.label.split(" ")):
            if tag not in known:
                return (
                    "unknown_label",
                    f"{word_location(row, row.line, i)}: tag {tag!r} is not one of "
                    f"{', '.join(sorted(known))} ({known_from})",
                )
        return None

    def label_stats(self, counts: dict[str, int], labels: LabelMap) -> dict[str, Any]:
        """Words per tag and entities per type over the split's sentences."""
        tags = dict.fromkeys(labels.names, 0)
        entities: dict[str, int] = {}
        for row, rows in counts.items():
            sequence = row.split(" ")
            for tag in sequence:
                tags[tag] = tags.get(tag, 0) + rows
            for tag in sequence:
                if tag.startswith("B-"):
                    entities[tag[2:]] = entities.get(tag[2:], 0) + rows
        return {"words_per_tag": tags, "entities_per_type": dict(sorted(entities.items()))}

    def prep_columns(self, tokens: Tokens) -> dict[str, pa.Array]:
        """Nothing beyond what word tokenization writes (`ftpipe.data.words`)."""
        return {}

    def targets(self, rows: Rows, index: np.ndarray, tensors: dict[str, torch.Tensor]):
        """Each token's tag id, -100 where it trains nothing, padded to the batch's width.

        The width is that of the batch's token ids, or of its cached per-token features.
        """
        width = tensors["input_ids" if "input_ids" in tensors else "features"].shape[1]
        return pad_targets(rows.token_labels, index, width)

    def evaluator(self, rows: Rows, labels: LabelMap | None) -> Evaluator:
        """Gathers each scored word's prediction, then scores entities sentence by sentence."""
        assert labels is not None
        return _WordEvaluator(rows, labels.names)

    def predictions(self, outputs: Sequence[TaggedText], names: Sequence[str]) -> pd.DataFrame:
        """Per input, its `entities` (text, type, start, end, score) and each word's `tags`."""
        return prediction_frame(outputs, names)

    def score_heldout(
        self,
        outputs: Sequence[TaggedText],
        heldout: HeldOutRows,
        names: Sequence[str],
        temperature: float,
        output_dir: Path,
        bins: int,
    ) -> tuple[dict[str, float], pd.DataFrame]:
        """Strict IOB2 entity scores, the entity-type confusion and the error patterns."""
        return heldout_report(outputs, heldout.labels, names, output_dir, CONFUSION)

    def signature(self, names: Sequence[str], data: Any) -> tuple[dict, dict]:
        """Text in; a list of entities and a list of word tags out."""
        entity = {"text": "string", "type": "string", "start": "long", "end": "long",
                  "score": "double"}  # fmt: skip
        return {"text": "string"}, {"entities": [entity], "tags": ["string"]}

    def summary(self, metrics: dict[str, float]) -> str:
        """Entity F1 with its precision and recall, and token accuracy."""
        m = metrics
        return (
            f"entity F1 {m['entity_f1']:.4f} (precision {m['entity_precision']:.4f}, recall "
            f"{m['entity_recall']:.4f}), token accuracy {m['token_accuracy']:.4f}"
        )

    def report_rows(self, metrics: dict[str, float], names: Sequence[str]) -> list[list[str]]:
        """The evaluation report's section: precision, recall and F1 per entity type."""
        keys = ("precision", "recall", "f1")
        return [
            [kind, *(f"{metrics[f'{k}/{kind}']:.4f}" for k in keys)] for kind in entity_types(names)
        ]


class _WordEvaluator:
    """Keeps (sentence, word, predicted, gold) per scored word and the token loss."""

    def __init__(self, rows: Rows, names: tuple[str, ...]) -> None:
        self.rows, self.names = rows, names
        self.words: list[np.ndarray] = []
        self.loss = np.zeros(2)

    def update(
        self, logits: torch.Tensor, targets: torch.Tensor, rows: np.ndarray, own: np.ndarray
    ) -> None:
        logits = logits.float()
        for j in np.flatnonzero(own).tolist():
            trained = targets[j] != -100
            if trained.any():
                loss = torch.nn.functional.cross_entropy(
                    logits[j][trained], targets[j][trained], reduction="sum"
                )
                self.loss += (float(loss), int(trained.sum()))
            row = int(rows[j])
            word_ids = np.asarray(self.rows.word_ids[row])
            positions = np.flatnonzero(word_ids >= 0)
            predicted = logits[j, positions].argmax(-1).cpu().numpy()
            gold = targets[j, positions].cpu().numpy()
            sentence = np.full(len(positions), self.rows.sentences[row])
            self.words.append(np.stack([sentence, word_ids[positions], predicted, gold], axis=1))

    def compute(self, world_size: int) -> dict[str, float]:
        mine = (np.concatenate(self.words) if self.words else np.zeros((0, 4), int), self.loss)
        gathered: list[Any] = [None] * world_size
        torch.distributed.all_gather_object(gathered, mine)
        words = np.concatenate([g[0] for g in gathered])
        loss_sum, tokens = np.sum([g[1] for g in gathered], axis=0)
        return {
            **word_metrics(words, self.names),
            "loss": float(loss_sum / max(tokens, 1)),
        }


def word_metrics(words: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Entity and token scores from rows of (sentence, word, predicted id, gold id)."""
    words = words[np.lexsort((words[:, 1], words[:, 0]))]
    parts = np.split(words, np.flatnonzero(np.diff(words[:, 0])) + 1) if len(words) else []
    tags = np.asarray(names, dtype=object)
    gold = [tags[part[:, 3]].tolist() for part in parts]
    predicted = [tags[part[:, 2]].tolist() for part in parts]
    return tag_metrics(gold, predicted, names)
