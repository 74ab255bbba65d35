"""Prompt learning: learn virtual tokens, keep the model frozen.

Four strategies, which differ only in where the learned tokens enter: `prefix` adds key/value
vectors to every layer's attention; `p-tuning-v2` (Liu et al., 2022, deep prompt tuning) does
too, but produces them from the virtual tokens' embeddings through a two-layer MLP
(`strategy.prompt.encoder_hidden_size` wide: PEFT's prefix projection), which trains more
stably than free vectors; `p-tuning` produces input embeddings from a small encoder;
`prompt-tuning` learns input embeddings directly. One module serves them all because
everything but the PEFT config is shared.
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
    elif name == "p-tuning-v2":
        peft_config = peft.PrefixTuningConfig(
            **common, prefix_projection=True, encoder_hidden_size=settings.encoder_hidden_size
        )
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


def _deep_prompts(name: str, model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Prefix tuning or p-tuning v2, once the model is known to take the prefix."""
    # The prefix enters as past key/values; PEFT would only find out at the first forward pass.
    backbone = getattr(model, layout.backbone_name)
    if "past_key_values" not in inspect.signature(backbone.forward).parameters:
        raise FtpipeError(
            f"strategy.name={name} needs a model that accepts past key values, and "
            f"{type(model).__name__} does not. Use p-tuning or prompt-tuning instead."
        )
    return _prompt_learning(name, model, layout, config)


@register("prefix")
def prefix(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Prefix tuning (gradient checkpointing is turned off for it)."""
    return _deep_prompts("prefix", model, layout, config)


@register("p-tuning-v2")
def p_tuning_v2(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """P-tuning v2: deep prompts, projected by an MLP (no gradient checkpointing either)."""
    return _deep_prompts("p-tuning-v2", model, layout, config)


@register("p-tuning")
def p_tuning(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """P-tuning: a prompt encoder produces the virtual-token embeddings."""
    return _prompt_learning("p-tuning", model, layout, config)


@register("prompt-tuning")
def prompt_tuning(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Prompt tuning: the virtual-token embeddings are learned directly."""
    return _prompt_learning("prompt-tuning", model, layout, config)
