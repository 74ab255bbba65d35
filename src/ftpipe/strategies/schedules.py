"""Learning-rate schedules: linear warmup, then linear, cosine or constant.

Warmup keeps the first updates small while the new head is still random and its gradients are
large; without it those gradients can wreck the pretrained features in the first steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ftpipe.config.schema import TrainConfig


def warmup_steps(train: TrainConfig, total_steps: int) -> int:
    """Warmup length: `warmup_steps` if set, else `warmup_ratio` of all steps."""
    if train.warmup_steps:
        return min(train.warmup_steps, total_steps)
    return math.ceil(train.warmup_ratio * total_steps)


def lr_multiplier(kind: str, warmup: int, total_steps: int) -> Callable[[int], float]:
    """The factor on each group's base learning rate at a given optimizer step."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    return factor


def build_scheduler(optimizer: Optimizer, train: TrainConfig, total_steps: int) -> LambdaLR:
    """A LambdaLR scheduler stepped once per optimizer step."""
    multiplier = lr_multiplier(train.schedule, warmup_steps(train, total_steps), total_steps)
    return LambdaLR(optimizer, multiplier)
