"""The promotion gate on entity counts: sentences resampled, entity micro-F1 compared."""

from __future__ import annotations

import numpy as np
import pytest

from ftpipe.registry import resample
from ftpipe.registry.gate import Policy, Scored, decide, entity_bootstrap, metric_value
from ftpipe.tasks.entities import entity_scores, sentence_counts

TYPES = ("LOC", "ORG", "PER")
SENTENCES = 400
ENTITY = Policy(metric="entity_f1")


def gold_tags(seed: int = 0, shares=None) -> list[list[str]]:
    """Sentences of four 3-word slots, each holding an entity (1 or 2 words) half the time."""
    rng = np.random.default_rng(seed)
    sentences = []
    for _ in range(SENTENCES):
        tags: list[str] = []
        for _slot in range(4):
            if rng.random() < 0.5:
                kind = TYPES[rng.choice(len(TYPES), p=shares)]
                length = int(rng.integers(1, 3))
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (length - 1) + ["O"] * (3 - length)
            else:
                tags += ["O"] * 3
        sentences.append(tags)
    return sentences


def degrade(gold: list[list[str]], error: float | dict[str, float], seed: int) -> list[list[str]]:
    """Predictions that get each gold entity wrong with probability `error` (of its type).

    A wrong entity is missed, retyped or cut short, one of the three at random.
    """
    rng = np.random.default_rng(seed)
    rates = error if isinstance(error, dict) else dict.fromkeys(TYPES, error)
    predicted = []
    for tags in gold:
        out = list(tags)
        for start, tag in enumerate(tags):
            if not tag.startswith("B-") or rng.random() >= rates[tag[2:]]:
                continue
            end = start + 1
            while end < len(tags) and tags[end] == f"I-{tag[2:]}":
                end += 1
            mistake = rng.integers(3)
            if mistake == 0 or (mistake == 2 and end - start == 1):  # missed
                out[start:end] = ["O"] * (end - start)
            elif mistake == 1:  # retyped
                other = TYPES[(TYPES.index(tag[2:]) + 1) % len(TYPES)]
                out[start:end] = [f"B-{other}"] + [f"I-{other}"] * (end - start - 1)
            else:  # cut short: a different span
                out[end - 1] = "O"
        predicted.append(out)
    return predicted


def entities(gold, predicted, **budgets) -> Scored:
    return Scored.entities(sentence_counts(gold, predicted, TYPES), TYPES, **budgets)


def test_the_whole_set_entity_f1_is_micro_f1_of_the_summed_counts():
    gold = gold_tags()
    counts = sentence_counts(gold, degrade(gold, 0.3, seed=1), TYPES)
    decision = decide(Scored.entities(counts, TYPES), None, ENTITY)
    expected = entity_scores(counts.sum(axis=0), TYPES)
    assert decision.challenger == expected["entity_f1"]
    assert 0.6 < decision.challenger < 0.8
    assert decision.ci_low < decision.challenger < decision.ci_high


def test_per_type_f1_deltas_are_those_of_entity_scores():
    gold = gold_tags()
    mine = sentence_counts(gold, degrade(gold, 0.1, seed=1), TYPES)
    theirs = sentence_counts(gold, degrade(gold, 0.3, seed=2), TYPES)
    decision = decide(Scored.entities(mine, TYPES), Scored.entities(theirs, TYPES), ENTITY)
    a, b = entity_scores(mine.sum(axis=0), TYPES), entity_scores(theirs.sum(axis=0), TYPES)
    assert decision.class_f1_deltas == pytest.approx(
        {t: a[f"f1/{t}"] - b[f"f1/{t}"] for t in TYPES}, abs=1e-12
    )
    assert decision.champion == b["entity_f1"]


def test_a_clearly_better_challenger_is_promoted():
    gold = gold_tags()
    champion = entities(gold, degrade(gold, 0.3, seed=1))
    challenger = entities(gold, degrade(gold, 0.1, seed=2))

    decision = decide(challenger, champion, ENTITY, "test")

    assert decision.promote, decision.reason
    assert decision.ci_low > 0
    assert decision.challenger > decision.champion
    assert set(decision.class_f1_deltas) == set(TYPES)
    assert decision.reason.startswith("promoted") and "entity_f1" in decision.reason


def test_identical_models_are_kept():
    gold = gold_tags()
    model = entities(gold, degrade(gold, 0.2, seed=1))

    decision = decide(model, model, ENTITY)

    assert not decision.promote
    assert decision.checks["improvement"] is False
    assert decision.ci_low <= 0 <= decision.ci_high
    assert decision.challenger == decision.champion


def test_an_independent_model_of_equal_quality_is_kept_and_its_interval_straddles_zero():
    gold = gold_tags()
    champion = entities(gold, degrade(gold, 0.2, seed=1))
    challenger = entities(gold, degrade(gold, 0.2, seed=2))

    decision = decide(challenger, champion, ENTITY)

    assert not decision.promote
    assert decision.ci_low < 0 < decision.ci_high


def test_a_collapsed_entity_type_blocks_promotion_even_with_a_better_overall_score():
    gold = gold_tags(shares=[0.1, 0.45, 0.45])  # LOC is the rare type
    champion = entities(gold, degrade(gold, 0.25, seed=1))
    # Near-perfect on ORG and PER, but most LOC entities go wrong.
    challenger = entities(gold, degrade(gold, {"LOC": 0.9, "ORG": 0.02, "PER": 0.02}, seed=2))

    decision = decide(challenger, champion, ENTITY)

    assert decision.checks["improvement"] is True
    assert decision.checks["no_class_collapse"] is False
    assert not decision.promote
    deltas = decision.class_f1_deltas
    assert min(deltas, key=deltas.get) == "LOC"
    assert deltas["LOC"] < -ENTITY.max_class_f1_drop
    assert "no_class_collapse" in decision.reason and "entity type F1 drop" in decision.reason
    assert "(LOC)" in decision.reason


def test_the_first_model_is_promoted_only_if_its_interval_clears_the_floor():
    gold = gold_tags()
    model = entities(gold, degrade(gold, 0.1, seed=1))
    promoted = decide(model, None, Policy(metric="entity_f1", floor=0.8))
    assert promoted.promote and promoted.ci_low >= 0.8
    assert promoted.champion is None and promoted.class_f1_deltas == {}
    # A floor at the model's own score: met on paper, but the interval's lower bound is below.
    kept = decide(model, None, Policy(metric="entity_f1", floor=promoted.challenger))
    assert not kept.promote and kept.checks == {"floor": False}
    assert kept.ci_low < promoted.challenger < kept.ci_high


def test_the_entity_bootstrap_is_seeded_and_paired():
    gold = gold_tags()
    a = sentence_counts(gold, degrade(gold, 0.2, seed=1), TYPES)
    first = entity_bootstrap([a, a], samples=300, seed=9)
    again = entity_bootstrap([a, a], samples=300, seed=9)
    other = entity_bootstrap([a, a], samples=300, seed=10)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # Both models see the same resampled sentences: identical models never differ.
    np.testing.assert_array_equal(first[:, 0], first[:, 1])
    assert first[:, 0].std() > 0.005  # the sentences really are resampled


def test_each_sample_is_the_micro_f1_of_the_same_drawn_sentences_for_both_models(monkeypatch):
    gold = gold_tags()[:50]
    a = sentence_counts(gold, degrade(gold, 0.2, seed=1), TYPES)
    b = sentence_counts(gold, degrade(gold, 0.4, seed=2), TYPES)
    monkeypatch.setattr(resample, "_CHUNK_CELLS", 7 * len(gold))  # chunks of 7 samples
    draws = entity_bootstrap([a, b], samples=20, seed=3)

    rng = np.random.default_rng(3)
    rows = np.concatenate([rng.integers(0, len(gold), size=(k, len(gold))) for k in (7, 7, 6)])
    for sample, drawn in enumerate(rows):
        for model, counts in enumerate((a, b)):
            expected = entity_scores(counts[drawn].sum(axis=0), TYPES)["entity_f1"]
            assert draws[sample, model] == pytest.approx(expected, abs=1e-12)


def test_a_metric_that_does_not_fit_the_predictions_is_an_error():
    gold = gold_tags()
    spans = entities(gold, degrade(gold, 0.2, seed=1))
    labels = Scored(np.array([0, 1, 1]), np.array([0, 1, 0]), ("a", "b"))
    for metric in ("accuracy", "macro_f1"):
        with pytest.raises(ValueError, match="needs per-row labels, but these predictions are"):
            decide(spans, None, Policy(metric=metric))
    with pytest.raises(ValueError, match="needs entity counts"):
        decide(labels, None, ENTITY)
    with pytest.raises(ValueError, match="needs entity counts"):
        decide(spans, labels, ENTITY)  # a champion of the other kind
    with pytest.raises(ValueError, match="not computed from confusion matrices"):
        metric_value(np.eye(2, dtype=np.int64), "entity_f1")


def test_champion_counts_on_other_sentences_are_an_error():
    gold = gold_tags()
    challenger = entities(gold, degrade(gold, 0.1, seed=1))
    shuffled = gold[1:] + gold[:1]
    champion = entities(shuffled, degrade(shuffled, 0.1, seed=1))
    with pytest.raises(ValueError, match="not on the same rows"):
        decide(challenger, champion, ENTITY)
    reordered = Scored.entities(challenger.counts[:, ::-1], TYPES[::-1])
    with pytest.raises(ValueError, match="not on the same rows"):
        decide(challenger, reordered, ENTITY)


def test_counts_must_be_shaped_sentences_by_types_by_three():
    with pytest.raises(ValueError, match="not \\(sentences, 3 types, 3\\)"):
        Scored.entities(np.zeros((5, 2, 3), dtype=np.int64), TYPES)
    with pytest.raises(ValueError, match="either per-row labels or entity counts"):
        Scored(np.array([0]), np.array([0]), TYPES, counts=np.zeros((1, 3, 3), dtype=np.int64))
