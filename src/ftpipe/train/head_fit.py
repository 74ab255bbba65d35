"""Fit a feature-extraction head to convergence on the feature cache.

On cached features the head is a multinomial logistic regression over a fixed matrix: a convex
problem, and each pass over it costs milliseconds. `train.epochs` of mini-batch AdamW stop far
from its optimum and ship nearly uniform probabilities, so on the cache the head is instead
fit by full-batch L-BFGS (strong-Wolfe line search) on the whole train matrix, minimising

    mean cross-entropy + train.weight_decay / 2 * ||W||^2      (the bias is not penalised)

until the gradient or the loss stops moving, or `MAX_ITERATIONS`. That is scikit-learn's
`LogisticRegression(C=1 / (n * weight_decay))` on the same n rows (with two classes
C=2 / (n * weight_decay): scikit-learn fits one weight vector where the head has a row per
class, and the penalty splits it evenly between them). The fit is the run's one
optimizer step (`RunPlan.head_fit`): evaluation, checkpoint, export and the reports then run
as after any step. Every rank fits the same cache, and rank 0's result is then broadcast, so
the ranks agree bit for bit even where kernels are not deterministic.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

from ftpipe.config.schema import Config
from ftpipe.train.batching import BatchSource

log = logging.getLogger(__name__)

MAX_ITERATIONS = 2000
"""L-BFGS iterations at most (each one or a few passes over the cached matrix)."""

LOG_EVERY = 50
"""Iterations between progress lines."""

TOLERANCE_GRAD = 1e-5
"""Converged when no gradient entry exceeds this (the loss is a mean, so it is scale-free)."""

TOLERANCE_CHANGE = 1e-9
"""Or when an iteration changes the loss or the weights by less than this."""


def fits_cached_head(config: Config) -> bool:
    """Whether the run fits a feature-extraction head on cached features (this module)."""
    return config.strategy.name == "feature-extraction" and config.train.feature_cache


@dataclass(frozen=True)
class LogisticFit:
    """A fitted linear head.

    Attributes:
        weight: [classes, features].
        bias: [classes].
        loss: The final objective: mean cross-entropy plus the L2 term.
        iterations: L-BFGS iterations taken.
        evaluations: Passes over the matrix (objective and gradient), line search included.
        converged: A tolerance was met before `MAX_ITERATIONS`.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    loss: float
    iterations: int
    evaluations: int
    converged: bool


def fit_logistic(
    features: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    l2: float,
    max_iterations: int = MAX_ITERATIONS,
    announce: bool = True,
) -> LogisticFit:
    """Multinomial logistic regression by full-batch L-BFGS, from zero weights, in fp32.

    Args:
        features: [rows, features] on the device to fit on.
        labels: [rows] class ids.
        classes: Number of classes (some may have no rows).
        l2: The L2 strength on the weights (`train.weight_decay`).
        max_iterations: Iteration cap.
        announce: Log the loss every `LOG_EVERY` iterations (on one rank only).
    """
    features = features.float()
    weight = torch.zeros(classes, features.shape[1], device=features.device, requires_grad=True)
    bias = torch.zeros(classes, device=features.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        # max_eval far above max_iter: only the iteration cap or a tolerance ends a step.
        [weight, bias], lr=1.0, max_iter=LOG_EVERY, max_eval=LOG_EVERY * 10, history_size=20,
        tolerance_grad=TOLERANCE_GRAD, tolerance_change=TOLERANCE_CHANGE,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = torch.addmm(bias, features, weight.t())
        loss = nn.functional.cross_entropy(logits, labels) + 0.5 * l2 * weight.square().sum()
        loss.backward()
        return loss

    # Steps of LOG_EVERY iterations, so the log shows it converge; L-BFGS keeps its history
    # across them. A step that stops short of its iterations met a tolerance.
    iterations, converged, loss = 0, False, float("nan")
    state = optimizer.state[weight]
    while iterations < max_iterations and not converged:
        chunk = min(LOG_EVERY, max_iterations - iterations)
        optimizer.param_groups[0]["max_iter"] = chunk
        optimizer.step(objective)
        taken = state["n_iter"] - iterations
        iterations += taken
        converged = taken < chunk
        loss = objective().item()
        if announce:
            log.info("head fit: iteration %d  loss %.6f", iterations, loss)
    return LogisticFit(weight.detach(), bias.detach(), loss, iterations,
                       state.get("func_evals", 0), converged)  # fmt: skip


def fit_head(
    head: nn.Linear, source: BatchSource, l2: float, announce: bool
) -> tuple[float, int, int, float]:
    """Fit `head` on every row of the cached `source`: (loss, vectors passed over, 0, seconds).

    A row is one vector, or for a tagging task one per token that has a tag (the head tags
    each token alone, so the fit is the same logistic regression over those vectors). Every
    rank fits; rank 0's weights are then broadcast. They are copied into the head in place,
    where the DeepSpeed engine, its checkpoints and the export see them. `announce` logs the
    progress (on one rank only).
    """
    started = time.perf_counter()
    features, labels = source.head_matrix(head.weight.device)
    rows, classes = len(labels), head.out_features
    if announce:
        log.info(
            "Fitting the head on %d cached %s to convergence: full-batch L-BFGS, L2 %.2g "
            "(train.weight_decay), at most %d iterations",
            rows, "tokens" if source.per_token else "rows", l2, MAX_ITERATIONS,
        )  # fmt: skip
    fit = fit_logistic(features, labels, classes, l2, announce=announce)
    with torch.no_grad():
        head.weight.copy_(fit.weight)
        head.bias.copy_(fit.bias)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        for tensor in (head.weight.data, head.bias.data):
            torch.distributed.broadcast(tensor, src=0)
    seconds = time.perf_counter() - started
    if announce:
        log.log(
            logging.INFO if fit.converged else logging.WARNING,
            "Head fit %s after %d iterations (%d passes over the cache) in %.1f s: loss %.6f",
            "converged" if fit.converged else "stopped at the cap, not converged,",
            fit.iterations, fit.evaluations, seconds, fit.loss,
        )  # fmt: skip
    return fit.loss, rows * fit.evaluations, 0, seconds
