"""Optimizer parameter groups: learning rate by depth, weight decay by kind.

* New parameters (the head, adapters, virtual tokens) get `train.head_lr`: they start from
  random values and must move far.
* Pretrained parameters get `train.lr`, scaled by layer-wise decay: block l of N (1-based)
  gets lr * decay**(N - l), the embeddings lr * decay**N, and what sits above the blocks
  (pooler, final norm) lr. Lower layers hold general features, so they move least.
* Biases, norm weights and scaling vectors (IA3) get no weight decay: pulling them toward zero
  fights the normalisation or the identity they start from. Only true matrices decay.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from ftpipe.config.schema import TrainConfig
from ftpipe.strategies.base import Prepared
from ftpipe.strategies.layers import true_numel, true_shape

log = logging.getLogger(__name__)


def param_groups(prepared: Prepared, train: TrainConfig) -> list[dict[str, Any]]:
    """Group the parameters to optimise by (learning rate, weight decay), and log the counts.

    Frozen parameters are left out, except under gradual unfreezing, where they join later
    and so must be in the optimizer from the start (AdamW skips parameters without grads).
    """
    include_frozen = prepared.unfreeze is not None
    depth = _pretrained_depths(prepared)
    n = prepared.layout.num_blocks
    groups: dict[tuple[str, float, float], dict[str, Any]] = {}
    for parameter in prepared.model.parameters():
        if not (parameter.requires_grad or include_frozen):
            continue
        if id(parameter) in prepared.pretrained:
            lr = train.lr * train.layer_decay ** (n - depth.get(id(parameter), n))
            role = "pretrained"
        else:
            lr, role = train.head_lr, "new"
        shape = true_shape(parameter)
        decay = 0.0 if len(shape) < 2 or min(shape) == 1 else train.weight_decay
        group = groups.setdefault(
            (role, lr, decay), {"params": [], "lr": lr, "weight_decay": decay, "role": role}
        )
        group["params"].append(parameter)
    ordered = sorted(groups.values(), key=lambda g: (g["role"], -g["lr"], g["weight_decay"]))
    for line in describe(ordered):
        log.info(line)
    return ordered


def describe(groups: list[dict[str, Any]]) -> list[str]:
    """One line per learning rate: how many parameters train at it."""
    by_lr: dict[tuple[str, float], int] = defaultdict(int)
    for group in groups:
        by_lr[(group["role"], group["lr"])] += sum(true_numel(p) for p in group["params"])
    return [f"lr {lr:.2e}: {count:,} {role} parameters" for (role, lr), count in by_lr.items()]


def _pretrained_depths(prepared: Prepared) -> dict[int, int]:
    """Depth of each pretrained parameter: 0 embeddings, l for block l (1-based)."""
    layout = prepared.layout
    depth: dict[int, int] = {}
    for _, module in layout.embeddings:
        depth.update({id(p): 0 for p in module.parameters()})
    for index, (_, block) in enumerate(layout.blocks, start=1):
        # Adapter weights injected into a block are new, not pretrained: they keep head_lr.
        depth.update({id(p): index for p in block.parameters() if id(p) in prepared.pretrained})
    return depth
