"""`gradual-unfreezing`: ULMFiT-style; start with the head, unfreeze one group at a time.

Unfreezing from the top down lets the new head settle before gradients reach the general
features below, which protects them from the head's early, noisy gradients. Groups, top first:
the blocks' surroundings (pooler, final norm) with the top block, then each lower block, then
the embeddings, one group every `strategy.unfreeze_every` epochs. The optimizer must hold every
parameter from the start (see param_groups), which is why ZeRO stages above 0 are refused.
"""

from torch import nn

from ftpipe.config.schema import Config
from ftpipe.strategies.base import register, set_trainable
from ftpipe.strategies.layers import Layout


@register("gradual-unfreezing")
def gradual_unfreezing(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Freeze all but the head and attach the schedule as `model.ftpipe_unfreeze(epoch)`.

    For a language model the head is its output layer; where that is tied to the embeddings
    (GPT-2), the shared weights train from the start.
    """
    every = config.strategy.unfreeze_every
    groups = unfreeze_groups(model, layout)

    def unfreeze(epoch: int) -> int:
        """Make the top `epoch // every` groups trainable; return how many are."""
        count = min(epoch // every, len(groups))
        for group in groups[:count]:
            for parameter in group:
                parameter.requires_grad_(True)
        return count

    set_trainable([model], False)
    set_trainable([m for _, m in layout.head], True)
    model.ftpipe_unfreeze = unfreeze
    return model


def unfreeze_groups(model: nn.Module, layout: Layout) -> list[list[nn.Parameter]]:
    """Parameter groups in unfreezing order, top first."""
    backbone = getattr(model, layout.backbone_name)
    placed = {id(p) for _, m in layout.embeddings + layout.blocks for p in m.parameters()}
    surroundings = [p for p in backbone.parameters() if id(p) not in placed]
    blocks = [list(m.parameters()) for _, m in reversed(layout.blocks)]
    embeddings = [p for _, m in layout.embeddings for p in m.parameters()]
    return [surroundings + blocks[0], *blocks[1:], embeddings]
