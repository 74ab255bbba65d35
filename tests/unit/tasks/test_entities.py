"""Entity logic: strict IOB2 spans, scheme conversion, span counts, scores and error reports."""

from __future__ import annotations

import numpy as np
import pytest

from ftpipe.tasks.entities import (
    detect_scheme,
    entity_scores,
    entity_types,
    error_patterns,
    repair,
    sentence_counts,
    spans,
    to_iob2,
    type_confusion,
)


def tags(text: str) -> list[str]:
    return text.split()


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("", []),
        ("O O O", []),
        ("B-PER", [(0, 1, "PER")]),
        ("B-PER I-PER O B-LOC", [(0, 2, "PER"), (3, 4, "LOC")]),
        ("O B-ORG I-ORG I-ORG", [(1, 4, "ORG")]),
        ("B-PER B-PER", [(0, 1, "PER"), (1, 2, "PER")]),
        # Stray I- start nothing in strict mode: at the start, after O, after another type.
        ("I-PER I-PER O", []),
        ("O I-LOC O", []),
        ("B-PER O I-PER", [(0, 1, "PER")]),
        ("B-PER I-ORG", [(0, 1, "PER")]),
        ("B-PER I-ORG I-ORG B-LOC", [(0, 1, "PER"), (3, 4, "LOC")]),
        ("B-PER I-PER I-ORG I-PER", [(0, 2, "PER")]),
        # Unprefixed tags and BIOES prefixes are outside until converted.
        ("B-PER PER I-PER", [(0, 1, "PER")]),
        ("S-PER B-LOC E-LOC", [(1, 2, "LOC")]),
    ],
)
def test_strict_iob2_spans(sentence, expected):
    assert spans(tags(sentence)) == expected


@pytest.mark.parametrize(
    ("sentence", "scheme", "expected"),
    [
        ("B-PER I-PER O I-LOC", "IOB2", "B-PER I-PER O I-LOC"),
        ("I-PER I-PER B-PER O I-LOC", "IOB1", "B-PER I-PER B-PER O B-LOC"),
        ("I-PER I-ORG O", "IOB1", "B-PER B-ORG O"),
        ("I-PER I-PER O I-LOC", "IO", "B-PER I-PER O B-LOC"),
        ("S-PER B-ORG I-ORG E-ORG O S-LOC", "BIOES", "B-PER B-ORG I-ORG I-ORG O B-LOC"),
        ("B-ORG E-ORG S-ORG", "BIOES", "B-ORG I-ORG B-ORG"),
    ],
)
def test_to_iob2(sentence, scheme, expected):
    assert to_iob2(tags(sentence), scheme) == tags(expected)


def test_bioes_converted_spans():
    converted = to_iob2(tags("S-PER B-ORG I-ORG E-ORG O S-LOC"), "BIOES")
    assert spans(converted) == [(0, 1, "PER"), (1, 4, "ORG"), (5, 6, "LOC")]


def test_to_iob2_rejects_an_unknown_scheme():
    with pytest.raises(ValueError, match="IOE2"):
        to_iob2(["O"], "IOE2")


@pytest.mark.parametrize(
    ("corpus", "expected"),
    [
        (["B-PER I-PER O", "O B-LOC"], "IOB2"),
        (["O O", ""], "IOB2"),  # no entities: nothing to convert
        (["B-PER O I-PER"], "IOB2"),  # IOB2 with a stray I-, for repair
        (["I-PER I-PER B-PER O", "I-LOC"], "IOB1"),
        (["I-PER B-PER B-PER"], "IOB1"),
        (["I-PER I-PER O", "O I-LOC"], "IO"),
        (["B-PER E-PER O", "S-LOC"], "BIOES"),
        (["O S-LOC"], "BIOES"),
    ],
)
def test_detect_scheme(corpus, expected):
    assert detect_scheme(tags(sentence) for sentence in corpus) == expected


@pytest.mark.parametrize(
    ("sentence", "expected", "changed"),
    [
        ("B-PER I-PER O", "B-PER I-PER O", []),
        ("I-PER I-PER O", "B-PER I-PER O", [0]),
        ("B-PER I-ORG I-ORG O I-LOC", "B-PER B-ORG I-ORG O B-LOC", [1, 4]),
    ],
)
def test_repair(sentence, expected, changed):
    assert repair(tags(sentence)) == (tags(expected), changed)


def test_entity_types():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "S-MISC", "E-MISC", "I-ORG"]
    assert entity_types(labels) == ["LOC", "MISC", "ORG", "PER"]


# Worked example, types (LOC, PER):
#   sentence 0  gold PER[0,2) LOC[3,4)   predicted PER[0,2) LOC[3,5)    tp PER 1
#   sentence 1  gold PER[1,2)            predicted LOC[0,1) PER[1,2)    tp PER 1
#   sentence 2  gold LOC[0,1)            predicted none (stray I-LOC)
# PER: tp 2, predicted 2, gold 2 -> P 1, R 1, F1 1
# LOC: tp 0, predicted 2, gold 2 -> P 0, R 0, F1 0
# micro: tp 2, predicted 4, gold 4 -> P 2/4, R 2/4, F1 2PR / (P + R) = 1/2
GOLD = [tags("B-PER I-PER O B-LOC O"), tags("O B-PER O"), tags("B-LOC O")]
PREDICTED = [tags("B-PER I-PER O B-LOC I-LOC"), tags("B-LOC B-PER O"), tags("I-LOC O")]
TYPES = ["LOC", "PER"]


def test_sentence_counts_and_scores_on_a_worked_example():
    counts = sentence_counts(GOLD, PREDICTED, TYPES)

    assert counts.shape == (3, 2, 3)
    assert counts.tolist() == [
        [[0, 1, 1], [1, 1, 1]],
        [[0, 1, 0], [1, 1, 1]],
        [[0, 0, 1], [0, 0, 0]],
    ]
    scores = entity_scores(counts.sum(axis=0), TYPES)
    assert scores == pytest.approx(
        {
            "entity_precision": 0.5,
            "entity_recall": 0.5,
            "entity_f1": 0.5,
            "precision/LOC": 0.0,
            "recall/LOC": 0.0,
            "f1/LOC": 0.0,
            "precision/PER": 1.0,
            "recall/PER": 1.0,
            "f1/PER": 1.0,
        }
    )


def test_scores_of_a_resampled_subset_are_its_rows_summed():
    # Sentence 1 twice: tp PER 2, predicted 4 (2 LOC, 2 PER), gold 2 PER -> P 1/2, R 1.
    counts = sentence_counts(GOLD, PREDICTED, TYPES)[[1, 1]].sum(axis=0)
    scores = entity_scores(counts, TYPES)
    assert scores["entity_precision"] == pytest.approx(0.5)
    assert scores["entity_recall"] == pytest.approx(1.0)
    assert scores["entity_f1"] == pytest.approx(2 / 3)
    assert scores["recall/LOC"] == 0.0  # no gold LOC: zero division gives 0.0


def test_no_entities_score_zero():
    counts = sentence_counts([tags("O O")], [tags("O O")], ["PER"]).sum(axis=0)
    assert set(entity_scores(counts, ["PER"]).values()) == {0.0}


def test_misaligned_or_unlisted_input_is_refused():
    with pytest.raises(ValueError, match="2 gold sentences"):
        sentence_counts([["O"], ["O"]], [["O"]], ["PER"])
    with pytest.raises(ValueError, match="Sentence 0"):
        sentence_counts([["O", "O"]], [["O"]], ["PER"])
    with pytest.raises(ValueError, match="'ORG'"):
        sentence_counts([["B-PER"]], [["B-ORG"]], ["PER"])
    with pytest.raises(ValueError, match="shape"):
        entity_scores(np.zeros((3, 2, 3)), TYPES)


def test_error_patterns_cover_each_kind():
    gold = [
        tags("B-PER I-PER O O"),  # missed PER
        tags("O O B-LOC O"),  # spurious ORG at 0; LOC predicted as ORG
        tags("B-ORG I-ORG I-ORG O"),  # ORG split in two predicted ORG spans
        tags("B-PER I-PER O O"),  # PER predicted as a longer LOC
        tags("B-LOC O O O"),  # exact: no pattern
    ]
    predicted = [
        tags("O O O O"),
        tags("B-ORG O B-ORG O"),
        tags("B-ORG B-ORG I-ORG O"),
        tags("B-LOC I-LOC I-LOC O"),
        tags("B-LOC O O O"),
    ]
    assert error_patterns(gold, predicted) == [
        ("wrong boundary", "ORG", 2),
        ("missed", "PER", 1),
        ("spurious", "ORG", 1),
        ("wrong type", "LOC→ORG", 1),
        ("wrong type and boundary", "PER→LOC", 1),
    ]
    assert error_patterns(gold, predicted, limit=2) == [
        ("wrong boundary", "ORG", 2),
        ("missed", "PER", 1),
    ]


def test_type_confusion():
    types = ["LOC", "ORG", "PER"]
    gold = [
        tags("B-PER I-PER I-PER O O"),  # PER overlaps LOC [0,1) and ORG [1,3): ORG wins
        tags("B-LOC I-LOC O B-ORG O"),  # LOC ties PER [0,1) and LOC [1,2): leftmost; ORG missed
        tags("B-ORG O O O B-LOC"),  # ORG exact; LOC missed; PER at 2 invented
    ]
    predicted = [
        tags("B-LOC B-ORG I-ORG O O"),
        tags("B-PER B-LOC O O O"),
        tags("B-ORG O B-PER O O"),
    ]
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[2, 1] = 1  # PER -> ORG (largest overlap)
    expected[0, 2] = 1  # LOC -> PER (tie, leftmost)
    expected[1, 3] = 1  # ORG in sentence 1 -> none
    expected[1, 1] = 1  # ORG exact
    expected[0, 3] = 1  # LOC in sentence 2 -> none
    expected[3, 2] = 1  # PER invented
    assert type_confusion(gold, predicted, types).tolist() == expected.tolist()


SEQEVAL_TAGS = ["O", "O", "O"] + [f"{p}-{t}" for p in "BI" for t in ("PER", "ORG", "LOC", "MISC")]


def random_tags(rng: np.random.Generator, lengths: np.ndarray) -> list[list[str]]:
    return [[SEQEVAL_TAGS[i] for i in rng.integers(0, len(SEQEVAL_TAGS), n)] for n in lengths]


def test_scores_match_seqeval_strict_iob2():
    metrics = pytest.importorskip("seqeval.metrics")
    scheme = pytest.importorskip("seqeval.scheme")
    rng = np.random.default_rng(7)
    lengths = rng.integers(0, 15, size=200)
    gold, predicted = random_tags(rng, lengths), random_tags(rng, lengths)
    types = entity_types(tag for sentence in gold + predicted for tag in sentence)

    scores = entity_scores(sentence_counts(gold, predicted, types).sum(axis=0), types)
    report = metrics.classification_report(
        gold, predicted, mode="strict", scheme=scheme.IOB2, output_dict=True, zero_division=0
    )

    assert scores["entity_f1"] == pytest.approx(report["micro avg"]["f1-score"])
    assert scores["entity_precision"] == pytest.approx(report["micro avg"]["precision"])
    assert scores["entity_recall"] == pytest.approx(report["micro avg"]["recall"])
    for tag_type in types:
        assert scores[f"f1/{tag_type}"] == pytest.approx(report[tag_type]["f1-score"])
        assert scores[f"precision/{tag_type}"] == pytest.approx(report[tag_type]["precision"])
        assert scores[f"recall/{tag_type}"] == pytest.approx(report[tag_type]["recall"])
    # Spans themselves, not only the sums, agree with seqeval's strict extraction.
    corpus = gold + predicted
    entities = scheme.Entities(corpus, scheme.IOB2).entities
    for sentence, found in zip(corpus, entities, strict=True):
        assert spans(sentence) == [(e.start, e.end, e.tag) for e in found]
