"""`feature-extraction`: the whole backbone is frozen and only the new head trains.

The cheapest strategy, and the right one when the pretrained features already separate the
classes (small data, similar domain).
"""

from torch import nn

from ftpipe.config.schema import Config
from ftpipe.strategies.base import register, require_classifier, set_trainable
from ftpipe.strategies.layers import Layout


@register("feature-extraction")
def feature_extraction(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Freeze the backbone; train the head."""
    require_classifier(model, "feature-extraction")
    set_trainable([model], False)
    set_trainable([m for _, m in layout.head], True)
    return model
