"""Temperature scaling: one scalar T > 0 that makes a classifier's probabilities honest.

A classifier's logits often rank well but are scaled badly: over-confident after fine-tuning
many weights, under-confident from a head stopped early or held back by weight decay.
Dividing every logit by one fitted T fixes the scale without changing any prediction
(argmax is unchanged, so accuracy and F1 are too). T is fit after training on the eval split
by minimising its log loss over log T (so T stays positive), stored in the export, and
applied wherever the model serves probabilities: softmax(logits / T).
"""

from __future__ import annotations

import numpy as np
import torch

from ftpipe.tasks.classification_report import expected_calibration_error

TEMPERATURE_RANGE = (0.05, 20.0)
"""Bounds of a fitted T. Eval logits that separate every row would drive T towards 0
(certainty on every future row) until the gradient vanishes; the bounds cap that."""


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities [..., classes] at a temperature, in float64 (over the last axis)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def log_loss(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / temperature)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in `TEMPERATURE_RANGE` that minimises the log loss of softmax(logits / T).

    L-BFGS with a strong-Wolfe line search over log T, in float64 on the CPU: deterministic,
    so every rank that fits the same logits gets the same T. No rows give T = 1.
    """
    if len(labels) == 0:
        return 1.0
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=100, tolerance_grad=1e-9, tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    low, high = TEMPERATURE_RANGE
    return float(np.clip(log_t.exp().item(), low, high))


def calibration_metrics(
    logits: np.ndarray, labels: np.ndarray, temperature: float, bins: int = 15
) -> dict[str, float]:
    """T, and the ECE and log loss before (`*_raw`, T = 1) and after (`*_calibrated`) it."""
    return {
        "temperature": float(temperature),
        "ece_raw": expected_calibration_error(softmax(logits), labels, bins),
        "ece_calibrated": expected_calibration_error(softmax(logits, temperature), labels, bins),
        "loss_raw": log_loss(logits, labels),
        "loss_calibrated": log_loss(logits, labels, temperature),
    }
