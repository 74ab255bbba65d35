"""Serving a token-classification model: words from text, entities with offsets, the report.

Predict takes text or pre-tokenized words. Text is split into words the way CoNLL-style
corpora are (runs of letters and digits; every other non-space character alone), keeping each
word's character offsets, so an entity comes back as (text, type, start, end, score) with
`text == input[start:end]`. Pre-tokenized words are joined by single spaces, and the offsets
point into that joined text. A word's tag is read on its first sub-word; sub-words never reach
the output. Predicted tags are read leniently (an `I-X` opening an entity starts one, as
`repair` does), and an entity's score is the mean probability of its words' tags.

Evaluation scores held-out sentences in strict IOB2 (`ftpipe.tasks.entities`): entity
precision, recall and F1 per type and micro, token accuracy, the entity-type confusion matrix
and the most frequent error patterns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ftpipe.tasks.classification_report import matrix_png
from ftpipe.tasks.entities import (
    entity_scores,
    entity_types,
    error_patterns,
    repair,
    sentence_counts,
    spans,
    type_confusion,
)

WORD = re.compile(r"\w+|[^\w\s]")
"""A word of text to tag: a run of letters and digits, or one other non-space character."""

ERRORS = "error_patterns.json"
"""The evaluation's most frequent error patterns, beside metrics.json."""


@dataclass(frozen=True)
class TaggedText:
    """One input's words and the model's tag probabilities for each.

    Attributes:
        text: The text the offsets point into.
        offsets: Per word, its (start, end) character offsets in `text`.
        probabilities: [words, tags], softmax over the tags.
    """

    text: str
    offsets: list[tuple[int, int]]
    probabilities: np.ndarray

    @property
    def words(self) -> list[str]:
        """The words, as cut from the text."""
        return [self.text[start:end] for start, end in self.offsets]


def split_words(text: str) -> list[tuple[int, int]]:
    """Each word's (start, end) in `text` (see `WORD`)."""
    return [match.span() for match in WORD.finditer(text)]


def joined(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Pre-tokenized words as one text, joined by single spaces, with each word's offsets."""
    offsets, position = [], 0
    for word in words:
        offsets.append((position, position + len(word)))
        position += len(word) + 1
    return " ".join(words), offsets


def entities(tagged: TaggedText, names: Sequence[str]) -> list[dict]:
    """The entities of one input: text, type, character start and end, and score."""
    best = tagged.probabilities.argmax(axis=1) if len(tagged.offsets) else np.zeros(0, int)
    tags, _ = repair([names[i] for i in best])
    confidence = tagged.probabilities[np.arange(len(best)), best]
    found = []
    for first, end, kind in spans(tags):
        start, stop = tagged.offsets[first][0], tagged.offsets[end - 1][1]
        found.append({
            "text": tagged.text[start:stop],
            "type": kind,
            "start": start,
            "end": stop,
            "score": float(confidence[first:end].mean()),
        })  # fmt: skip
    return found


def predicted_tags(tagged: TaggedText, names: Sequence[str]) -> list[str]:
    """Each word's most probable tag."""
    return [names[i] for i in tagged.probabilities.argmax(axis=1)] if len(tagged.offsets) else []


def prediction_frame(outputs: Sequence[TaggedText], names: Sequence[str]) -> pd.DataFrame:
    """What predict returns per input: its `entities` and each word's predicted `tags`."""
    return pd.DataFrame({
        "entities": [entities(tagged, names) for tagged in outputs],
        "tags": [predicted_tags(tagged, names) for tagged in outputs],
    })  # fmt: skip


def tag_metrics(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], names: Sequence[str]
) -> dict[str, float]:
    """Strict IOB2 entity scores (micro and per type) and token accuracy over sentences."""
    types = entity_types(names)
    counts = sentence_counts(gold, predicted, types)
    same = [
        g == p for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True)
    ]
    accuracy = float(np.mean(same)) if same else 0.0
    return {**entity_scores(counts.sum(axis=0), types), "token_accuracy": accuracy}


def heldout_report(
    outputs: Sequence[TaggedText],
    gold: Sequence[str],
    names: Sequence[str],
    output_dir: Path,
    confusion: str,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Score held-out sentences; write the type confusion PNG and the error patterns.

    Args:
        outputs: The model's tagged words, one per sentence.
        gold: Each sentence's gold tags, joined by spaces.
        names: The tags, in id order.
        output_dir: Where the figure and error_patterns.json go.
        confusion: The confusion figure's file name.

    Returns:
        The metrics, and one row per sentence for the gate (row, text, label, predicted, with
        label and predicted the tags joined by spaces).
    """
    gold_tags = [sentence.split(" ") for sentence in gold]
    predicted = [predicted_tags(tagged, names) for tagged in outputs]
    metrics = tag_metrics(gold_tags, predicted, names)
    types = entity_types(names)
    matrix = type_confusion(gold_tags, predicted, types)
    matrix_png(matrix, (*types, "none"), output_dir / confusion, "Entity types", "entities")
    patterns = error_patterns(gold_tags, predicted, limit=20)
    (output_dir / ERRORS).write_text(json.dumps(
        [{"kind": kind, "pattern": what, "count": n} for kind, what, n in patterns], indent=2
    ) + "\n")  # fmt: skip
    frame = pd.DataFrame({
        "row": np.arange(len(gold)),
        "text": [tagged.text for tagged in outputs],
        "label": list(gold),
        "predicted": [" ".join(tags) for tags in predicted],
        "correct": [" ".join(tags) == g for tags, g in zip(predicted, gold, strict=True)],
    })  # fmt: skip
    return metrics, frame
