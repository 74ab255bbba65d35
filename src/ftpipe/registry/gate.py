"""The promotion gate's statistics: a paired bootstrap over one held-out set, and the decision.

Pure numpy, no MLflow, so every rule can be tested on synthetic predictions. Both models'
predictions are on the same rows in the same order (the caller checks the set's
fingerprint). Resampling rows, not models, keeps the comparison paired: each bootstrap
sample draws one set of row indices and scores both models on exactly those rows, so the
noise the two share (easy and hard rows) cancels in the difference.

The rows should be prep's test split. On eval, which also selected the model (the sweep's best
trial, training's best checkpoint), the interval is optimistic, and the decision says so
(`Decision.optimistic`, `OPTIMISTIC` in its reason).

One set of rules serves three kinds of prediction (`Scored`), resampled as
`ftpipe.registry.resample` describes: a classifier's labelled rows, a named-entity model's
per-sentence span counts (the sentence is the resampled unit, and the per-class F1 rule guards
each entity type), and a causal LM's per-row (numerator, denominator) sums of a mean metric
(summed token loss over target tokens, which a challenger must lower; exact match or ROUGE-L).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ftpipe.registry.resample import count_bootstrap, label_bootstrap, ratio

Metric = Literal["accuracy", "macro_f1", "entity_f1", "loss", "exact_match", "rouge_l"]

ENTITY_METRICS = ("entity_f1",)
"""Metrics computed from entity counts (`Scored.counts`)."""

MEAN_METRICS = ("loss", "exact_match", "rouge_l")
"""Metrics computed from per-row (numerator, denominator) sums (`Scored.sums`)."""

LOWER_IS_BETTER = ("loss",)
"""Metrics a challenger must lower: the gate compares them with their sign turned."""

OPTIMISTIC = (
    "The interval is optimistic: the eval split it was computed on also selected the model (the "
    "sweep's best trial, training's best checkpoint), so it overstates how the model does on "
    "new data. Hold out a test split (data.test or data.test_fraction) for an interval that "
    "means what it says."
)
"""Said by a decision made on the eval split, in its reason and in the log."""


@dataclass(frozen=True)
class Policy:
    """When a challenger may replace the champion (the `promote` config section).

    Attributes:
        metric: What "better" means.
        margin: The whole confidence interval of (challenger - champion) must lie above it.
        max_class_f1_drop: Largest drop in any one class's F1 that is tolerated (for
            entity counts: any one entity type's F1).
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

    Per-row labels (a classifier), per-sentence entity counts (a named-entity model, built
    with `Scored.entities`), or per-row (numerator, denominator) sums (a causal LM, built with
    `Scored.means`); with counts or sums, `labels` and `predicted` are empty.

    Attributes:
        labels: True label ids, one per row; empty with `counts`.
        predicted: Predicted label ids, same rows; empty with `counts`.
        names: Label names in id order, or with `counts` the entity types in their order.
        latency_ms: p95 single-row latency, if measured.
        size_mb: Model size on disk, if measured.
        counts: Entity counts [sentences, types, 3] of (true positives, predicted spans, gold
            spans) per sentence and type; None otherwise.
        sums: Per row, (numerator, denominator) of a mean metric [rows, 2]; None otherwise.

    Raises:
        ValueError: If `counts` is not shaped [sentences, len(names), 3], or comes with labels.
    """

    labels: np.ndarray
    predicted: np.ndarray
    names: tuple[str, ...]
    latency_ms: float | None = None
    size_mb: float | None = None
    counts: np.ndarray | None = None
    sums: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.sums is not None and np.shape(self.sums)[1:] != (2,):
            raise ValueError(f"Sums have shape {np.shape(self.sums)}, not (rows, 2).")
        if self.counts is None:
            return
        shape = np.shape(self.counts)
        if len(shape) != 3 or shape[1:] != (len(self.names), 3):
            raise ValueError(
                f"Entity counts have shape {shape}, not (sentences, {len(self.names)} types, 3)."
            )
        if len(self.labels) or len(self.predicted):
            raise ValueError("A Scored holds either per-row labels or entity counts, not both.")

    @classmethod
    def entities(
        cls, counts: np.ndarray, types: Sequence[str], latency_ms: float | None = None,
        size_mb: float | None = None,
    ) -> Scored:  # fmt: skip
        """A named-entity model's predictions as per-sentence counts.

        Args:
            counts: `sentence_counts(gold, predicted, types)`: [sentences, types, 3].
            types: The entity types, in the order of the counts' second axis.
            latency_ms: p95 single-row latency, if measured.
            size_mb: Model size on disk, if measured.
        """
        empty = np.empty(0, dtype=np.int64)
        return cls(empty, empty, tuple(types), latency_ms, size_mb, np.asarray(counts))

    @classmethod
    def means(
        cls, sums: np.ndarray, latency_ms: float | None = None, size_mb: float | None = None
    ) -> Scored:
        """A model's per-row (numerator, denominator) sums of a mean metric (a causal LM's).

        Args:
            sums: [rows, 2]: a row's summed token loss and its target tokens, or its exact
                match (or ROUGE-L) and 1, or (0, 0) for a row the metric does not cover.
            latency_ms: p95 single-row latency, if measured.
            size_mb: Model size on disk, if measured.
        """
        empty = np.empty(0, dtype=np.int64)
        return cls(empty, empty, (), latency_ms, size_mb, None, np.asarray(sums, np.float64))


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
        class_f1_deltas: Challenger minus champion F1 per class, or per entity type for
            entity counts (empty without a champion).
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
    """Accuracy or macro-F1 of confusion matrices [..., C, C].

    Raises:
        ValueError: If `metric` is not computed from confusion matrices.
    """
    if metric == "accuracy":
        correct = np.diagonal(matrices, axis1=-2, axis2=-1).sum(axis=-1)
        return correct / matrices.sum(axis=(-2, -1))
    if metric == "macro_f1":
        return per_class_f1(matrices).mean(axis=-1)
    raise ValueError(f"Metric {metric!r} is not computed from confusion matrices.")


def span_f1(counts: np.ndarray) -> np.ndarray:
    """F1 of (true positives, predicted, gold) span counts [..., 3]; 0 where undefined.

    Computed as 2PR/(P+R), the way `ftpipe.tasks.entities.entity_scores` does, so the two
    agree to the last bit. Pass counts [..., types, 3] for per-type F1, and their sum over
    types ([..., 3]) for micro-F1.
    """
    tp, predicted, gold = np.moveaxis(np.asarray(counts, dtype=np.float64), -1, 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, gold, out=np.zeros_like(tp), where=gold > 0)
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)


def bootstrap(
    labels: np.ndarray, predictions: list[np.ndarray], classes: int, metric: Metric,
    samples: int, seed: int,
) -> np.ndarray:  # fmt: skip
    """Accuracy or macro-F1 of each model on each bootstrap sample of rows: [samples, models]."""
    value = lambda matrices: metric_value(matrices, metric)  # noqa: E731
    return label_bootstrap(labels, predictions, classes, value, samples, seed)


def entity_bootstrap(counts: list[np.ndarray], samples: int, seed: int) -> np.ndarray:
    """Entity micro-F1 of each model on each bootstrap sample of sentences: [samples, models].

    Args:
        counts: Each model's counts [sentences, types, 3], on the same sentences in order
            (summed over types first: micro-F1 needs only the totals).
        samples: Bootstrap samples.
        seed: Seed of the resampling.
    """
    return count_bootstrap([np.asarray(c).sum(axis=1) for c in counts], span_f1, samples, seed)


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

    Raises:
        ValueError: If the metric does not fit the kind of predictions (`entity_f1` needs
            entity counts, loss, exact_match and rouge_l per-row sums, the others per-row
            labels), or the champion's predictions are not on the same rows (for entity
            counts: the same types and gold spans per sentence).
    """
    models = [challenger] if champion is None else [challenger, champion]
    for scored in models:
        _check_metric(scored, policy.metric)
    if champion is not None and not _same_rows(challenger, champion):
        raise ValueError("the two prediction sets are not on the same rows")
    value, mine = _whole_set(challenger, policy.metric)
    budgets, notes = _budgets(challenger, policy)
    draws = _draws(models, policy)
    # A metric to lower (loss) is compared with its sign turned: "better" is always "above".
    sign = -1.0 if policy.metric in LOWER_IS_BETTER else 1.0
    if champion is None:
        low, high = interval(draws[:, 0], policy.confidence)
        floor = {"floor": low >= policy.floor} if sign > 0 else {}  # a loss has no floor
        checks = floor | budgets
        detail = (
            f"no champion yet; {policy.metric} {value:.4f}, {policy.confidence:.0%} CI "
            f"[{low:.4f}, {high:.4f}]{f', floor {policy.floor:.4f}' if floor else ''}{notes}"
        )
        return Decision(
            all(checks.values()), _reason(checks, detail, split), policy.metric, value, None,
            low, high, {}, checks, split, split != "test",
        )  # fmt: skip
    baseline, theirs = _whole_set(champion, policy.metric)
    low, high = interval(sign * (draws[:, 0] - draws[:, 1]), policy.confidence)
    deltas = mine - theirs
    class_deltas = {name: float(d) for name, d in zip(challenger.names, deltas, strict=True)}
    checks = {"improvement": low > policy.margin}
    change = "difference" if sign > 0 else "reduction (champion minus challenger)"
    detail = (
        f"{policy.metric} {value:.4f} vs champion {baseline:.4f}; {change} "
        f"{policy.confidence:.0%} CI [{low:.4f}, {high:.4f}] against margin {policy.margin:.4f}"
    )
    if class_deltas:  # a mean metric has no classes to guard
        checks["no_class_collapse"] = bool(deltas.min() >= -policy.max_class_f1_drop)
        worst = min(class_deltas, key=class_deltas.__getitem__)
        unit = "class" if challenger.counts is None else "entity type"
        detail += (
            f"; largest {unit} F1 drop {-min(class_deltas[worst], 0.0):.4f} ({worst}) against "
            f"{policy.max_class_f1_drop:.4f}"
        )
    checks |= budgets
    detail += notes
    return Decision(
        all(checks.values()), _reason(checks, detail, split), policy.metric, value, baseline,
        low, high, class_deltas, checks, split, split != "test",
    )  # fmt: skip


_KINDS = {
    "labels": ("per-row labels", "accuracy or macro_f1"),
    "counts": ("entity counts (Scored.entities)", " or ".join(ENTITY_METRICS)),
    "sums": ("per-row sums (Scored.means)", ", ".join(MEAN_METRICS)),
}
"""Each kind of prediction, and the metrics the gate computes from it."""


def _check_metric(scored: Scored, metric: Metric) -> None:
    """Raise ValueError when `metric` cannot be computed from this kind of predictions."""
    kind = "counts" if scored.counts is not None else "sums" if scored.sums is not None else ""
    needed = "counts" if metric in ENTITY_METRICS else "sums" if metric in MEAN_METRICS else ""
    if kind != needed:
        have, use = _KINDS[kind or "labels"]
        raise ValueError(
            f"The gate's metric {metric!r} needs {_KINDS[needed or 'labels'][0]}, but these "
            f"predictions are {have}; use {use} for them."
        )


def _same_rows(challenger: Scored, champion: Scored) -> bool:
    """Whether both are on the same rows: same labels, same types and gold spans, or as many."""
    if challenger.sums is not None and champion.sums is not None:
        return len(challenger.sums) == len(champion.sums)
    if challenger.counts is None or champion.counts is None:
        return np.array_equal(challenger.labels, champion.labels)
    return challenger.names == champion.names and np.array_equal(
        challenger.counts[..., 2], champion.counts[..., 2]
    )


def _whole_set(scored: Scored, metric: Metric) -> tuple[float, np.ndarray]:
    """The metric on the whole set, and the F1 of each class (or entity type; none for sums)."""
    if scored.sums is not None:
        return float(ratio(scored.sums.sum(axis=0))), np.empty(0)
    if scored.counts is not None:
        summed = scored.counts.sum(axis=0)  # [types, 3]
        return float(span_f1(summed.sum(axis=0))), span_f1(summed)
    matrix = confusion(scored.labels, scored.predicted, len(scored.names))
    return float(metric_value(matrix, metric)), per_class_f1(matrix)


def _draws(models: list[Scored], policy: Policy) -> np.ndarray:
    """Each model's metric on each bootstrap sample (paired): [samples, models]."""
    if models[0].sums is not None:
        sums = [m.sums for m in models if m.sums is not None]
        return count_bootstrap(sums, ratio, policy.samples, policy.seed)
    if models[0].counts is not None:
        counts = [m.counts for m in models if m.counts is not None]
        return entity_bootstrap(counts, policy.samples, policy.seed)
    return bootstrap(
        models[0].labels, [m.predicted for m in models], len(models[0].names), policy.metric,
        policy.samples, policy.seed,
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
