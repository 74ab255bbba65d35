"""`full`: every parameter trains (with a small learning rate on the pretrained ones)."""

from torch import nn

from ftpipe.config.schema import Config
from ftpipe.strategies.base import register, set_trainable
from ftpipe.strategies.layers import Layout


@register("full")
def full(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Make every parameter trainable."""
    set_trainable([model], True)
    return model
