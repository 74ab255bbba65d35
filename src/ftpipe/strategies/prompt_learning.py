"""`prefix`, `p-tuning` and `prompt-tuning`: learn virtual tokens, keep the model frozen.

The three differ only in where the learned tokens enter: prefix tuning adds key/value vectors
to every layer's attention; p-tuning produces input embeddings from a small encoder; prompt
tuning learns input embeddings directly. One module serves all three because everything but
the PEFT config class is shared.
"""

import inspect

from torch import nn

from ftpipe.config.schema import Config
from ftpipe.errors import FtpipeError
from ftpipe.strategies.base import register
from ftpipe.strategies.layers import Layout
from ftpipe.strategies.peft_common import head_to_save, prompt_dimensions, task_type, wrap


def _prompt_learning(name: str, model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    import peft

    settings = config.strategy.prompt
    common = {
        "task_type": task_type(config),
        "num_virtual_tokens": settings.num_virtual_tokens,
        **prompt_dimensions(model),
    }
    if name == "prefix":
        peft_config = peft.PrefixTuningConfig(**common)
    elif name == "p-tuning":
        peft_config = peft.PromptEncoderConfig(
            **common, encoder_hidden_size=settings.encoder_hidden_size
        )
    else:
        peft_config = peft.PromptTuningConfig(**common)
    saved = head_to_save(layout, config)
    if saved:
        peft_config.modules_to_save = saved
    return wrap(model, peft_config, name)


@register("prefix")
def prefix(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Prefix tuning (gradient checkpointing is turned off for it)."""
    # The prefix enters as past key/values; PEFT would only find out at the first forward pass.
    backbone = getattr(model, layout.backbone_name)
    if "past_key_values" not in inspect.signature(backbone.forward).parameters:
        raise FtpipeError(
            f"strategy.name=prefix needs a model that accepts past key values, and "
            f"{type(model).__name__} does not. Use p-tuning or prompt-tuning instead."
        )
    return _prompt_learning("prefix", model, layout, config)


@register("p-tuning")
def p_tuning(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """P-tuning: a prompt encoder produces the virtual-token embeddings."""
    return _prompt_learning("p-tuning", model, layout, config)


@register("prompt-tuning")
def prompt_tuning(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Prompt tuning: the virtual-token embeddings are learned directly."""
    return _prompt_learning("prompt-tuning", model, layout, config)
