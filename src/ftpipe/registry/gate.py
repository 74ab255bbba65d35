"""The promotion gate's statistics: a paired bootstrap over one held-out set, and the decision.

Pure numpy, no MLflow, so every rule can be tested on synthetic predictions. Both models'
predictions are on the same rows in the same order (the caller checks the set's
fingerprint). Resampling rows, not models, keeps the comparison paired: each bootstrap
sample draws one set of row indices and scores both models on exactly those rows, so the
noise the two share (easy and hard rows) cancels in the difference.

The rows should be prep's test split. On eval, which also selected the model (the sweep's best
trial, training's best checkpoint), the interval is optimistic, and the decision says so
(`Decision.optimistic`, `OPTIMISTIC` in its reason).

A sample's metric comes from its confusion matrix, computed for all samples at once with
one `bincount` over (sample, label, prediction) codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Metric = Literal["accuracy", "macro_f1"]

OPTIMISTIC = (
    "The interval is optimistic: the eval split it was computed on also selected the model (the "
    "sweep's best trial, training's best checkpoint), so it overstates how the model does on "
    "new data. Hold out a test split (data.test or data.test_fraction) for an interval that "
    "means what it says."
)
"""Said by a decision made on the eval split, in its reason and in the log."""

_CHUNK_CELLS = 4_000_000
"""Row indices drawn per chunk of bootstrap samples (bounds memory at ~32 MB)."""


@dataclass(frozen=True)
class Policy:
    """When a challenger may replace the champion (the `promote` config section).

    Attributes:
        metric: What "better" means.
        margin: The whole confidence interval of (challenger - champion) must lie above it.
        max_class_f1_drop: Largest drop in any one class's F1 that is tolerated.
        floor: With no champion, the interval's lower bound of the metric must reach it.
        confidence: Two-sided confidence level of the intervals.
        samples: Bootstrap samples.
        seed: Seed of the resampling, so a decision can be reproduced.
        max_latency_ms: Budget for the challenger's p95 single-row latency; None: no budget.
        max_size_mb: Budget for the challenger's size on disk; None: no budget.
    """

    metric: Metric = "macro_f1"
    margin: float = 0.0
    max_class_f1_drop: float = 0.05
    floor: float = 0.0
    confidence: float = 0.95
    samples: int = 2000
    seed: int = 0
    max_latency_ms: float | None = None
    max_size_mb: float | None = None


@dataclass(frozen=True)
class Scored:
    """One model's predictions on the held-out set, plus what the budgets check.

    Attributes:
        labels: True label ids, one per row.
        predicted: Predicted label ids, same rows.
        names: Label names in id order.
        latency_ms: p95 single-row latency, if measured.
        size_mb: Model size on disk, if measured.
    """

    labels: np.ndarray
    predicted: np.ndarray
    names: tuple[str, ...]
    latency_ms: float | None = None
    size_mb: float | None = None


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and the evidence behind it.

    Attributes:
        promote: Whether the challenger becomes champion.
        reason: One sentence a person can act on.
        metric: The metric compared.
        challenger: The challenger's metric on the whole set.
        champion: The champion's metric, or None when there is none.
        ci_low: Lower bound of the interval: of the difference, or of the challenger's
            metric when there is no champion.
        ci_high: Upper bound of the same interval.
        class_f1_deltas: Challenger minus champion F1 per class (empty without a champion).
        checks: Each rule's outcome, by name.
        split: The prep split the predictions are on: "test", or "eval" without a test split.
        optimistic: Whether the interval is biased upwards because the split also selected
            the model (eval); the reason then ends with `OPTIMISTIC`.
    """

    promote: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None
    ci_low: float
    ci_high: float
    class_f1_deltas: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    split: str = "eval"
    optimistic: bool = True


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """The [true, predicted] count matrix."""
    codes = labels.astype(np.int64) * classes + predicted.astype(np.int64)
    return np.bincount(codes, minlength=classes * classes).reshape(classes, classes)


def per_class_f1(matrices: np.ndarray) -> np.ndarray:
    """F1 of every class from confusion matrices [..., C, C]; 0 where a class is never seen."""
    tp = np.diagonal(matrices, axis1=-2, axis2=-1).astype(np.float64)
    support = matrices.sum(axis=-1)
    predicted = matrices.sum(axis=-2)
    denominator = support + predicted
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def metric_value(matrices: np.ndarray, metric: Metric) -> np.ndarray:
    """Accuracy or macro-F1 of confusion matrices [..., C, C]."""
    if metric == "accuracy":
        correct = np.diagonal(matrices, axis1=-2, axis2=-1).sum(axis=-1)
        return correct / matrices.sum(axis=(-2, -1))
    return per_class_f1(matrices).mean(axis=-1)


def bootstrap(
    labels: np.ndarray,
    predictions: list[np.ndarray],
    classes: int,
    metric: Metric,
    samples: int,
    seed: int,
) -> np.ndarray:
    """The metric of each model on each bootstrap sample: [samples, models].

    Every model is scored on the same resampled rows (a paired bootstrap).
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    codes = [labels.astype(np.int64) * classes + p.astype(np.int64) for p in predictions]
    cells = classes * classes
    out = np.empty((samples, len(predictions)))
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        rows = rng.integers(0, n, size=(k, n))
        offsets = (np.arange(k) * cells)[:, None]
        for m, code in enumerate(codes):
            counts = np.bincount((code[rows] + offsets).ravel(), minlength=k * cells)
            out[start : start + k, m] = metric_value(counts.reshape(k, classes, classes), metric)
    return out


def interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The two-sided percentile interval."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def decide(
    challenger: Scored, champion: Scored | None, policy: Policy, split: str = "eval"
) -> Decision:
    """Apply every rule of the gate; see `Policy` for what each one demands.

    Args:
        challenger: The challenger's predictions.
        champion: The champion's, on the same rows; None when there is no champion yet.
        policy: The rules.
        split: The prep split the rows are: "test", or "eval", whose interval is optimistic
            (the reason then says so).
    """
    classes = len(challenger.names)
    mine = confusion(challenger.labels, challenger.predicted, classes)
    value = float(metric_value(mine, policy.metric))
    budgets, notes = _budgets(challenger, policy)
    if champion is None:
        draws = bootstrap(
            challenger.labels, [challenger.predicted], classes, policy.metric,
            policy.samples, policy.seed,
        )[:, 0]  # fmt: skip
        low, high = interval(draws, policy.confidence)
        checks = {"floor": low >= policy.floor, **budgets}
        detail = (
            f"no champion yet; {policy.metric} {value:.4f}, {policy.confidence:.0%} CI "
            f"[{low:.4f}, {high:.4f}], floor {policy.floor:.4f}{notes}"
        )
        return Decision(
            all(checks.values()), _reason(checks, detail, split), policy.metric, value, None,
            low, high, {}, checks, split, split != "test",
        )  # fmt: skip
    if not np.array_equal(challenger.labels, champion.labels):
        raise ValueError("the two prediction sets are not on the same rows")
    theirs = confusion(champion.labels, champion.predicted, classes)
    baseline = float(metric_value(theirs, policy.metric))
    draws = bootstrap(
        challenger.labels, [challenger.predicted, champion.predicted], classes,
        policy.metric, policy.samples, policy.seed,
    )  # fmt: skip
    low, high = interval(draws[:, 0] - draws[:, 1], policy.confidence)
    deltas = per_class_f1(mine) - per_class_f1(theirs)
    class_deltas = {name: float(d) for name, d in zip(challenger.names, deltas, strict=True)}
    checks = {
        "improvement": low > policy.margin,
        "no_class_collapse": bool(deltas.min() >= -policy.max_class_f1_drop),
        **budgets,
    }
    worst = min(class_deltas, key=class_deltas.__getitem__)
    detail = (
        f"{policy.metric} {value:.4f} vs champion {baseline:.4f}; difference "
        f"{policy.confidence:.0%} CI [{low:.4f}, {high:.4f}] against margin {policy.margin:.4f}; "
        f"largest class F1 drop {-min(class_deltas[worst], 0.0):.4f} ({worst}) against "
        f"{policy.max_class_f1_drop:.4f}{notes}"
    )
    return Decision(
        all(checks.values()), _reason(checks, detail, split), policy.metric, value, baseline,
        low, high, class_deltas, checks, split, split != "test",
    )  # fmt: skip


def _budgets(scored: Scored, policy: Policy) -> tuple[dict[str, bool], str]:
    # A budget with no measurement fails: an unmeasured model cannot be shown to fit it.
    checks, notes = {}, ""
    for name, value, budget, unit in (
        ("latency", scored.latency_ms, policy.max_latency_ms, "ms p95"),
        ("size", scored.size_mb, policy.max_size_mb, "MB"),
    ):
        if budget is not None:
            checks[name] = value is not None and value <= budget
            shown = "unmeasured" if value is None else f"{value:.1f} {unit}"
            notes += f"; {name} {shown} against budget {budget:g}"
    return checks, notes


def _reason(checks: dict[str, bool], detail: str, split: str) -> str:
    failed = [name for name, ok in checks.items() if not ok]
    verdict = "promoted: every check passed" if not failed else f"kept: failed {', '.join(failed)}"
    reason = f"{verdict} (on the {split} split: {detail})"
    return reason if split == "test" else f"{reason}. {OPTIMISTIC}"
