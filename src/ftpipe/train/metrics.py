"""Evaluation metrics, and which direction is better for each.

Classification: loss, accuracy, macro-F1 and per-class F1. Language modelling: loss and
perplexity.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import f1_score

from ftpipe.errors import ConfigError

HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "loss": False, "perplexity": False}


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...]
) -> dict[str, float]:
    """Loss, accuracy, macro-F1 and `f1/<class>` for every class (classes absent count 0)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    predicted = logits.argmax(axis=1)
    per_class = f1_score(
        labels, predicted, labels=np.arange(len(names)), average=None, zero_division=0
    )
    return {
        "loss": float(-log_probs[np.arange(len(labels)), labels].mean()),
        "accuracy": float((predicted == labels).mean()),
        "macro_f1": float(per_class.mean()),
        **{f"f1/{name}": float(score) for name, score in zip(names, per_class, strict=True)},
    }


def lm_metrics(loss_sum: float, tokens: int) -> dict[str, float]:
    """Mean token loss and perplexity."""
    loss = loss_sum / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def resolve_metric(metric: str, classification: bool) -> tuple[str, bool]:
    """The early-stopping metric and whether higher is better.

    Raises:
        ConfigError: If the metric does not exist for the task.
    """
    if metric == "auto":
        metric = "macro_f1" if classification else "loss"
    valid = ("accuracy", "macro_f1", "loss") if classification else ("loss", "perplexity")
    if metric not in valid:
        task = "classification" if classification else "causal language modelling"
        raise ConfigError(
            f"train.metric={metric} is not reported for {task}; use one of {', '.join(valid)} "
            "or auto."
        )
    return metric, HIGHER_IS_BETTER[metric]
