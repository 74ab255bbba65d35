"""`gradual-unfreezing`: ULMFiT-style; start with the head, unfreeze one group at a time.

Unfreezing from the top down lets the new head settle before gradients reach the general
features below, which protects them from the head's early, noisy gradients. Groups, top first:
the blocks' surroundings (pooler, final norm) with the top block, then each lower block, then
the embeddings. One more group becomes trainable every `strategy.unfreeze_every` optimizer
steps (or that fraction of training); by default every group trains by the middle of training,
so the lower blocks get as many updates as the upper ones had alone. The optimizer must hold
every parameter from the start (see param_groups), which is why ZeRO stages above 0 are refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from ftpipe.config.schema import Config
from ftpipe.strategies.base import register, set_trainable
from ftpipe.strategies.layers import Layout

log = logging.getLogger(__name__)


@dataclass
class UnfreezeSchedule:
    """Which groups train at each optimizer step.

    Attributes:
        groups: Parameter groups in unfreezing order, top first.
        names: What each group holds, for the log.
        every: Steps between unfreezings (int), a fraction of all steps (float), or None for
            every group trainable by the middle of training.
        trainable: Groups trainable so far.
    """

    groups: list[list[nn.Parameter]]
    names: list[str]
    every: int | float | None
    trainable: int = 0

    def due(self, step: int, total_steps: int) -> int:
        """How many groups train from optimizer step `step` (0-based) of `total_steps`."""
        groups = len(self.groups)
        if self.every is None:  # evenly, so that every group trains by the middle of training
            return min(groups, step * 2 * groups // max(total_steps, 1))
        every = self.every
        if isinstance(every, float):
            every = max(1, round(every * total_steps))
        return min(groups, step // every)

    def apply(self, step: int, total_steps: int, announce: bool = True) -> int:
        """Make trainable every group due before optimizer step `step` (0-based).

        Called before each step, and so also at the first step of a resumed run, which
        unfreezes at once all the groups the interrupted run had unfrozen.

        Returns:
            How many groups are trainable.
        """
        due = self.due(step, total_steps)
        for group in range(self.trainable, due):
            for parameter in self.groups[group]:
                parameter.requires_grad_(True)
            if announce:
                log.info(
                    "step %d: unfroze %s (%d of %d groups trainable)",
                    step, self.names[group], group + 1, len(self.groups),
                )  # fmt: skip
        self.trainable = max(self.trainable, due)
        return self.trainable


@register("gradual-unfreezing")
def gradual_unfreezing(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Freeze all but the head and attach the schedule as `model.ftpipe_unfreeze`.

    For a language model the head is its output layer; where that is tied to the embeddings
    (GPT-2), the shared weights train from the start.
    """
    groups, names = unfreeze_groups(model, layout)
    set_trainable([model], False)
    set_trainable([m for _, m in layout.head], True)
    model.ftpipe_unfreeze = UnfreezeSchedule(groups, names, config.strategy.unfreeze_every)
    return model


def unfreeze_groups(model: nn.Module, layout: Layout) -> tuple[list[list[nn.Parameter]], list[str]]:
    """Parameter groups in unfreezing order, top first, and what each holds."""
    backbone = getattr(model, layout.backbone_name)
    placed = {id(p) for _, m in layout.embeddings + layout.blocks for p in m.parameters()}
    surroundings = [p for p in backbone.parameters() if id(p) not in placed]
    blocks = [(name, list(m.parameters())) for name, m in reversed(layout.blocks)]
    embeddings = [p for _, m in layout.embeddings for p in m.parameters()]
    groups = [surroundings + blocks[0][1], *(params for _, params in blocks[1:]), embeddings]
    names = [
        f"{blocks[0][0]} and the layers around the blocks",
        *(name for name, _ in blocks[1:]),
        ", ".join(name for name, _ in layout.embeddings) or "the embeddings",
    ]
    return groups, names
