"""The promotion gate's statistics on synthetic predictions: no MLflow, no training."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ftpipe.registry.gate import (
    OPTIMISTIC,
    Policy,
    Scored,
    bootstrap,
    confusion,
    decide,
    metric_value,
)
from tests.unit.registry.helpers import corrupt, swap

NAMES = ("billing", "refund", "shipping")
ROWS = 400


def held_out(seed: int = 0, shares=None) -> np.ndarray:
    return np.random.default_rng(seed).choice(len(NAMES), size=ROWS, p=shares)


def scored(labels, predicted, **budgets) -> Scored:
    return Scored(labels, predicted, NAMES, **budgets)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_a_challenger_better_by_noise_alone_is_not_promoted(metric):
    labels = held_out()
    champion = corrupt(labels, 0.8, len(NAMES), seed=1)
    # Disagrees with the champion on 38 rows and wins 20 of them: +0.5% by luck.
    challenger = swap(labels, champion, fix=20, spoil=18, seed=2)
    assert (challenger == labels).mean() > (champion == labels).mean()

    decision = decide(scored(labels, challenger), scored(labels, champion), Policy(metric=metric))

    assert not decision.promote
    assert decision.checks["improvement"] is False
    assert decision.ci_low < 0 < decision.ci_high
    assert decision.challenger > decision.champion  # better on paper, not provably
    assert "failed improvement" in decision.reason


def test_an_independent_model_of_equal_quality_that_scores_higher_is_not_promoted():
    labels = held_out()
    champion = corrupt(labels, 0.85, len(NAMES), seed=3)
    # Same true accuracy, independent errors; pick a seed where it happens to score higher.
    seed = next(s for s in range(10, 50) if (corrupt(labels, 0.85, 3, s) == labels).mean()
                > (champion == labels).mean())  # fmt: skip
    challenger = corrupt(labels, 0.85, len(NAMES), seed=seed)

    assert not decide(scored(labels, challenger), scored(labels, champion), Policy()).promote


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_a_clearly_better_challenger_is_promoted(metric):
    labels = held_out()
    champion = corrupt(labels, 0.8, len(NAMES), seed=1)
    challenger = swap(labels, champion, fix=40, spoil=2, seed=2)  # +9.5%

    decision = decide(scored(labels, challenger), scored(labels, champion), Policy(metric=metric))

    assert decision.promote, decision.reason
    assert decision.ci_low > 0.04
    assert all(decision.checks.values())
    assert set(decision.class_f1_deltas) == set(NAMES)


def test_the_margin_is_what_the_whole_interval_must_clear():
    labels = held_out()
    champion = corrupt(labels, 0.8, len(NAMES), seed=1)
    challenger = swap(labels, champion, fix=40, spoil=2, seed=2)
    first = decide(scored(labels, challenger), scored(labels, champion), Policy())
    above = Policy(margin=first.ci_low + 0.001)
    assert not decide(scored(labels, challenger), scored(labels, champion), above).promote


def test_a_class_collapse_blocks_promotion_even_with_a_better_overall_score():
    labels = held_out(shares=[0.45, 0.45, 0.10])  # shipping is the small class
    champion = corrupt(labels, 0.8, len(NAMES), seed=1)
    challenger = labels.copy()  # perfect on billing and refund ...
    shipping = np.flatnonzero(labels == 2)
    challenger[shipping[: len(shipping) * 2 // 3]] = 0  # ... but most shipping goes to billing
    assert (challenger == labels).mean() > (champion == labels).mean() + 0.03

    decision = decide(
        scored(labels, challenger), scored(labels, champion), Policy(metric="accuracy")
    )

    assert decision.checks["improvement"] is True
    assert decision.checks["no_class_collapse"] is False
    assert not decision.promote
    assert min(decision.class_f1_deltas, key=decision.class_f1_deltas.get) == "shipping"
    assert "no_class_collapse" in decision.reason


def test_the_first_model_is_promoted_only_above_the_floor():
    labels = held_out()
    good = corrupt(labels, 0.9, len(NAMES), seed=4)
    promoted = decide(scored(labels, good), None, Policy(floor=0.7))
    assert promoted.promote and promoted.ci_low >= 0.7
    # A floor at the model's own score: met on paper, but the interval's lower bound is below.
    kept = decide(scored(labels, good), None, Policy(floor=promoted.challenger))
    assert not kept.promote and kept.checks == {"floor": False}
    assert kept.champion is None and kept.ci_low < promoted.challenger < kept.ci_high


def test_budgets_block_a_model_over_them_or_unmeasured():
    labels = held_out()
    champion = corrupt(labels, 0.8, len(NAMES), seed=1)
    better = swap(labels, champion, fix=40, spoil=2, seed=2)
    policy = Policy(max_latency_ms=20.0, max_size_mb=100.0)
    base = scored(labels, champion)

    fits = decide(scored(labels, better, latency_ms=10.0, size_mb=50.0), base, policy)
    slow = decide(scored(labels, better, latency_ms=30.0, size_mb=50.0), base, policy)
    unmeasured = decide(scored(labels, better, size_mb=50.0), base, policy)

    assert fits.promote
    assert slow.checks["latency"] is False and not slow.promote
    assert unmeasured.checks["latency"] is False and "unmeasured" in unmeasured.reason


def test_metrics_from_confusion_matrices_match_sklearn():
    labels = held_out()
    predicted = corrupt(labels, 0.7, len(NAMES), seed=5)
    matrix = confusion(labels, predicted, len(NAMES))
    expected = f1_score(labels, predicted, average="macro")
    assert metric_value(matrix, "macro_f1") == pytest.approx(expected)
    assert metric_value(matrix, "accuracy") == pytest.approx((labels == predicted).mean())


def test_the_bootstrap_is_seeded_and_paired():
    labels = held_out()
    a = corrupt(labels, 0.8, len(NAMES), seed=1)
    first = bootstrap(labels, [a, a], len(NAMES), "macro_f1", samples=300, seed=9)
    again = bootstrap(labels, [a, a], len(NAMES), "macro_f1", samples=300, seed=9)
    np.testing.assert_array_equal(first, again)
    # Both models see the same resampled rows: identical models never differ.
    np.testing.assert_array_equal(first[:, 0], first[:, 1])
    assert first[:, 0].std() > 0.005  # the rows really are resampled


def test_a_decision_on_eval_says_its_interval_is_optimistic_and_one_on_test_does_not():
    labels = held_out()
    champion = corrupt(labels, 0.8, len(NAMES), seed=1)
    challenger = swap(labels, champion, fix=45, spoil=2, seed=3)
    on_test = decide(scored(labels, challenger), scored(labels, champion), Policy(), "test")
    on_eval = decide(scored(labels, challenger), scored(labels, champion), Policy())
    assert (on_test.split, on_test.optimistic) == ("test", False)
    assert (on_eval.split, on_eval.optimistic) == ("eval", True)  # eval unless told otherwise
    assert OPTIMISTIC not in on_test.reason and on_eval.reason.endswith(OPTIMISTIC)
    # The numbers are the same; only what they are worth differs.
    assert (on_test.promote, on_test.ci_low, on_test.ci_high) == (
        on_eval.promote, on_eval.ci_low, on_eval.ci_high,
    )  # fmt: skip
    first = decide(scored(labels, challenger), None, Policy(), "test")
    assert "on the test split" in first.reason and not first.optimistic
