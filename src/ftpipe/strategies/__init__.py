"""Fine-tuning strategies: one small module per strategy, registered by name."""

from ftpipe.strategies import (  # noqa: F401 - importing registers each strategy
    feature_extraction,
    freeze,
    full,
    gradual_unfreezing,
    ia3,
    lora,
    prompt_learning,
    qlora,
)
from ftpipe.strategies.base import STRATEGIES, Prepared, prepare
from ftpipe.strategies.layers import Layout, discover

__all__ = ["STRATEGIES", "Layout", "Prepared", "discover", "prepare"]
