"""Entity logic of a named-entity (token classification) task, on word-level tags.

Every score here is strict IOB2 span scoring, the same count seqeval makes with
`mode="strict", scheme=IOB2`: an entity is a `B-X` and the `I-X` that follow it, and a
predicted entity counts only if its start, end and type all equal a gold entity's. An `I-X`
that continues no span of type X starts no entity: strict scoring drops it rather than guess,
so a model that never learnt to emit `B-` scores what it earns. Corpora in other schemes
(IOB1, BIOES, IO) are converted to IOB2 first with `to_iob2`, and `repair` turns stray `I-`
into `B-` where that is wanted instead.

Scores are built from per-sentence counts (`sentence_counts`) so that a bootstrap resamples
sentences by summing rows of one array instead of re-extracting spans.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

Span = tuple[int, int, str]
"""An entity: (start word index, end word index exclusive, type)."""

SCHEMES = ("IOB2", "IOB1", "BIOES", "IO")
"""Tagging schemes `detect_scheme` tells apart and `to_iob2` converts."""

ERROR_KINDS = ("missed", "spurious", "wrong type", "wrong boundary", "wrong type and boundary")
"""The kinds `error_patterns` sorts a non-exact gold/predicted span pair into."""

OUTSIDE = "O"


def _split(tag: str) -> tuple[str, str]:
    """(prefix, type) of a tag: ("B", "PER") for "B-PER", ("O", "") for anything unprefixed."""
    if len(tag) >= 2 and tag[1] == "-" and tag[0] in "BIES":
        return tag[0], tag[2:]
    return OUTSIDE, ""


def _continues(prev: str, tag_type: str) -> bool:
    """Whether an I- of `tag_type` after the tag `prev` continues a span (IOB2 rules)."""
    prefix, prev_type = _split(prev)
    return prefix in ("B", "I") and prev_type == tag_type


def spans(tags: Sequence[str]) -> list[Span]:
    """Entity spans of one sentence in strict IOB2, as seqeval's strict mode extracts them.

    A span starts at `B-X` and runs over the `I-X` (same type) right after it. An `I-X` that
    continues no span of type X (at the start, after `O`, after another type) is ignored, and
    `B-PER I-ORG` is a one-word PER span and no ORG. `O` and any tag not prefixed `B-`/`I-`
    (`S-`/`E-` included: convert BIOES with `to_iob2` first) is outside.

    Args:
        tags: The sentence's tags, one a word.

    Returns:
        The spans in order of their start.
    """
    found: list[Span] = []
    start, open_type = -1, ""
    for i, tag in enumerate(tags):
        prefix, tag_type = _split(tag)
        if prefix == "I" and start >= 0 and tag_type == open_type:
            continue
        if start >= 0:
            found.append((start, i, open_type))
            start = -1
        if prefix == "B":
            start, open_type = i, tag_type
    if start >= 0:
        found.append((start, len(tags), open_type))
    return found


def repair(tags: Sequence[str]) -> tuple[list[str], list[int]]:
    """IOB2 repair: every `I-X` that continues no span of type X becomes `B-X`.

    This is the lenient reading of a stray `I-` (it opens an entity) that strict scoring
    refuses; applying it to predictions before scoring shows what the strays cost.

    Args:
        tags: The sentence's tags, one a word.

    Returns:
        The repaired tags, and the word indices whose tag changed.
    """
    repaired = list(tags)
    changed: list[int] = []
    for i, tag in enumerate(repaired):
        prefix, tag_type = _split(tag)
        # The previous tag is already repaired, so a run of strays becomes one entity.
        if prefix == "I" and not (i > 0 and _continues(repaired[i - 1], tag_type)):
            repaired[i] = f"B-{tag_type}"
            changed.append(i)
    return repaired, changed


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """One sentence's tags converted from `scheme` (one of `SCHEMES`) to IOB2.

    IOB1 and IO open an entity with `I-`, so conversion is `repair`. BIOES maps `S-X` to
    `B-X` and `E-X` to `I-X`; a malformed `E-`/`I-` (one continuing nothing) stays a stray
    `I-` that strict scoring ignores, as a strict BIOES scorer would.

    Args:
        tags: The sentence's tags, one a word.
        scheme: The scheme the tags are in.

    Returns:
        The tags in IOB2.

    Raises:
        ValueError: If `scheme` is not one of `SCHEMES`.
    """
    if scheme == "IOB2":
        return list(tags)
    if scheme in ("IOB1", "IO"):
        return repair(tags)[0]
    if scheme == "BIOES":
        converted = []
        for tag in tags:
            prefix, tag_type = _split(tag)
            mapped = {"S": "B", "E": "I"}.get(prefix, prefix)
            converted.append(tag if mapped == prefix else f"{mapped}-{tag_type}")
        return converted
    raise ValueError(f"Tag scheme {scheme!r} is not one of {', '.join(SCHEMES)}.")


def detect_scheme(sentences: Iterable[Sequence[str]]) -> str:
    """The tagging scheme a corpus uses, one of `SCHEMES`.

    The rule, first match wins:

    1. "BIOES" if any tag has an `S-` or `E-` prefix.
    2. "IO" if no tag has a `B-` prefix and some tag has an `I-` prefix.
    3. "IOB1" if some `I-X` opens a span (at the start, after `O` or after another type) and
       every `B-X` directly follows a `B-X` or `I-X` of the same type: `B-` only separates
       adjacent entities of one type.
    4. "IOB2" otherwise, including a corpus with no entities, and IOB2 with stray `I-`
       (an `I-` opens a span and some `B-` follows `O`), which `repair` fixes.

    IOB1 without adjacent same-type entities has no `B-` at all and reads as "IO"; both
    convert to IOB2 the same way, so nothing is lost.

    Args:
        sentences: Each sentence's tags.

    Returns:
        The scheme's name.
    """
    has_b = has_i = i_opens = b_after_other = False
    for tags in sentences:
        prev = OUTSIDE
        for tag in tags:
            prefix, tag_type = _split(tag)
            if prefix in ("S", "E"):
                return "BIOES"
            if prefix == "B":
                has_b = True
                b_after_other |= not _continues(prev, tag_type)
            elif prefix == "I":
                has_i = True
                i_opens |= not _continues(prev, tag_type)
            prev = tag
    if has_i and not has_b:
        return "IO"
    if i_opens and not b_after_other:
        return "IOB1"
    return "IOB2"


def entity_types(tags: Iterable[str]) -> list[str]:
    """The sorted entity types named in a set of tags (`B-`, `I-`, `S-`, `E-` stripped)."""
    return sorted({tag_type for prefix, tag_type in map(_split, tags) if prefix != OUTSIDE})


def _paired_spans(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> Iterator[tuple[list[Span], list[Span]]]:
    """Each sentence's (gold spans, predicted spans), after checking the two line up.

    Raises:
        ValueError: If the sentence counts or any sentence's word counts differ: spans of
            misaligned words would be scored against the wrong words without a sign.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted.")
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(
                f"Sentence {index} has {len(gold_tags)} gold tags but {len(predicted_tags)} "
                "predicted; pad or truncate predictions to the words."
            )
        yield spans(gold_tags), spans(predicted_tags)


def _type_index(types: Sequence[str]) -> dict[str, int]:
    return {tag_type: i for i, tag_type in enumerate(types)}


def _lookup(index: dict[str, int], tag_type: str) -> int:
    """The position of `tag_type` in `index`; a type missing from `types` is a caller bug."""
    if tag_type not in index:
        raise ValueError(
            f"Entity type {tag_type!r} is not in types ({', '.join(index)}); pass every type "
            "of both gold and predicted tags."
        )
    return index[tag_type]


def sentence_counts(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], types: Sequence[str]
) -> np.ndarray:
    """Per-sentence, per-type span counts for strict IOB2 scoring.

    Args:
        gold: Each sentence's gold tags (IOB2).
        predicted: Each sentence's predicted tags (IOB2), aligned with `gold`.
        types: The entity types, in the order of the second axis.

    Returns:
        An int64 array [sentences, len(types), 3] of (true positives, predicted spans, gold
        spans); a true positive is a predicted span with a gold span of the same start, end
        and type. Summing any set of rows over axis 0 gives that subset's counts.

    Raises:
        ValueError: If the tags do not line up, or a span's type is not in `types`.
    """
    index = _type_index(types)
    counts = np.zeros((len(gold), len(types), 3), dtype=np.int64)
    for row, (gold_spans, predicted_spans) in enumerate(_paired_spans(gold, predicted)):
        gold_set = set(gold_spans)
        for span in predicted_spans:
            column = _lookup(index, span[2])
            counts[row, column, 1] += 1
            counts[row, column, 0] += span in gold_set
        for span in gold_spans:
            counts[row, _lookup(index, span[2]), 2] += 1
    return counts


def _precision_recall_f1(true_pos: float, predicted: float, gold: float) -> tuple[float, ...]:
    """(precision, recall, F1), each 0.0 where its denominator is 0."""
    precision = true_pos / predicted if predicted else 0.0
    recall = true_pos / gold if gold else 0.0
    # F1 from precision and recall (not 2tp / (pred + gold)) to match seqeval to the last bit.
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_scores(counts: np.ndarray, types: Sequence[str]) -> dict[str, float]:
    """Micro and per-type precision, recall and F1 from summed counts.

    Args:
        counts: Counts [len(types), 3] of (true positives, predicted, gold), e.g.
            `sentence_counts(...).sum(axis=0)`.
        types: The entity types, in the order of the first axis.

    Returns:
        `entity_precision`, `entity_recall`, `entity_f1` (micro: over all types' spans), and
        `precision/<TYPE>`, `recall/<TYPE>`, `f1/<TYPE>` for each type; 0.0 where a
        denominator is 0.

    Raises:
        ValueError: If `counts` is not shaped [len(types), 3].
    """
    counts = np.asarray(counts)
    if counts.shape != (len(types), 3):
        raise ValueError(
            f"counts has shape {counts.shape}, not ({len(types)}, 3); sum sentence counts "
            "over axis 0 first."
        )
    scores: dict[str, float] = {}
    names = ("entity_precision", "entity_recall", "entity_f1")
    for name, value in zip(names, _precision_recall_f1(*counts.sum(axis=0).tolist()), strict=True):
        scores[name] = float(value)
    for tag_type, row in zip(types, counts.tolist(), strict=True):
        for name, value in zip(
            ("precision", "recall", "f1"), _precision_recall_f1(*row), strict=True
        ):
            scores[f"{name}/{tag_type}"] = float(value)
    return scores


def _overlap(a: Span, b: Span) -> int:
    """The number of words two spans share (0 when disjoint)."""
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def _pair_kind(gold: Span, predicted: Span) -> tuple[str, str]:
    """(kind, description) of an overlapping, non-exact gold/predicted pair."""
    same_bounds = gold[:2] == predicted[:2]
    if gold[2] == predicted[2]:
        return "wrong boundary", gold[2]
    change = f"{gold[2]}→{predicted[2]}"
    return ("wrong type" if same_bounds else "wrong type and boundary"), change


def error_patterns(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], limit: int = 20
) -> list[tuple[str, str, int]]:
    """The most frequent kinds of span error, for a report of what a model gets wrong.

    Every non-exact outcome counts once: a gold span overlapping no predicted span is
    "missed" (described by its type), a predicted span overlapping no gold span "spurious"
    (its type), and every overlapping pair that is not an exact match is "wrong type" (same
    boundaries; "PER→ORG"), "wrong boundary" (same type; "PER") or "wrong type and
    boundary" ("PER→ORG"). A gold span split over two predictions is two pairs.

    Args:
        gold: Each sentence's gold tags (IOB2).
        predicted: Each sentence's predicted tags (IOB2), aligned with `gold`.
        limit: How many patterns to return.

    Returns:
        (kind, description, count) for the `limit` most frequent patterns, by count
        descending, then kind, then description, so equal counts come out the same each run.

    Raises:
        ValueError: If the tags do not line up.
    """
    patterns: Counter[tuple[str, str]] = Counter()
    for gold_spans, predicted_spans in _paired_spans(gold, predicted):
        matched_predictions: set[Span] = set()
        for g in gold_spans:
            overlapping = [p for p in predicted_spans if _overlap(g, p)]
            if not overlapping:
                patterns["missed", g[2]] += 1
            matched_predictions.update(overlapping)
            # Spans of one sentence are disjoint, so an exact match is g's only overlap.
            patterns.update(_pair_kind(g, p) for p in overlapping if p != g)
        for p in predicted_spans:
            if p not in matched_predictions:
                patterns["spurious", p[2]] += 1
    ranked = sorted(patterns.items(), key=lambda item: (-item[1], item[0]))
    return [(kind, description, count) for (kind, description), count in ranked[:limit]]


def type_confusion(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], types: Sequence[str]
) -> np.ndarray:
    """Counts of gold entity type against predicted entity type, over overlapping spans.

    Each gold span is paired with the predicted span that shares the most words with it
    (ties: the leftmost) and counts at (gold type, predicted type); with no overlapping
    prediction it counts in the last column, "none". A predicted span that overlaps no gold
    span counts in the last row. A prediction overlapping two gold spans can count twice,
    and one that overlaps a gold span but is not its best pair not at all: the matrix
    describes what each gold entity became, plus the pure inventions.

    Args:
        gold: Each sentence's gold tags (IOB2).
        predicted: Each sentence's predicted tags (IOB2), aligned with `gold`.
        types: The entity types, in the order of both axes.

    Returns:
        An int64 array [len(types) + 1, len(types) + 1], rows gold, columns predicted.

    Raises:
        ValueError: If the tags do not line up, or a span's type is not in `types`.
    """
    index = _type_index(types)
    none = len(types)
    matrix = np.zeros((none + 1, none + 1), dtype=np.int64)
    for gold_spans, predicted_spans in _paired_spans(gold, predicted):
        for g in gold_spans:
            # max keeps the first maximum, and predicted spans are in order of start.
            best = max(predicted_spans, key=lambda p, g=g: _overlap(g, p), default=None)
            column = none if best is None or not _overlap(g, best) else _lookup(index, best[2])
            matrix[_lookup(index, g[2]), column] += 1
        for p in predicted_spans:
            if not any(_overlap(g, p) for g in gold_spans):
                matrix[none, _lookup(index, p[2])] += 1
    return matrix
