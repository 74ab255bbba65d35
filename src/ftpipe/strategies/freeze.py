"""`freeze`: freeze the embeddings and the lowest k blocks; the rest trains.

Lower layers hold general features that transfer; upper layers are task-specific. Freezing the
bottom saves memory and guards small datasets against overfitting.
"""

from fnmatch import fnmatchcase

from torch import nn

from ftpipe.config.schema import Config
from ftpipe.errors import FtpipeError
from ftpipe.strategies.base import register, set_trainable
from ftpipe.strategies.layers import Layout


@register("freeze")
def freeze(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Freeze embeddings + first k blocks (k < 0 keeps only the last |k|), then patterns."""
    k = config.strategy.freeze_layers
    n = layout.num_blocks
    if abs(k) > n:
        raise FtpipeError(
            f"strategy.freeze_layers={k}, but {type(model).__name__} has {n} blocks. Use a value "
            f"from -{n} to {n}."
        )
    frozen_blocks = k if k >= 0 else n + k
    set_trainable([model], True)
    set_trainable([m for _, m in layout.embeddings], False)
    set_trainable([m for _, m in layout.blocks[:frozen_blocks]], False)
    names = [name for name, _ in model.named_parameters()]
    for pattern in config.strategy.freeze_patterns:
        matched = [name for name in names if fnmatchcase(name, pattern)]
        if not matched:
            raise FtpipeError(
                f"strategy.freeze_patterns entry {pattern!r} matches no parameter of "
                f"{type(model).__name__}. Patterns match full names such as {names[0]!r} or "
                f"{names[len(names) // 2]!r}; start them with * to match any prefix."
            )
        for name, parameter in model.named_parameters():
            if name in matched:
                parameter.requires_grad_(False)
    return model
