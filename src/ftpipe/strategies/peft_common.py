"""What every PEFT strategy shares: the task type, the head to keep training, the wrap.

A new head (a classifier's) always trains (PEFT's `modules_to_save`); a pretrained output
layer (a language model's, often tied to the embeddings) is left to the adapter.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ftpipe.config.schema import Config
from ftpipe.errors import FtpipeError, reason
from ftpipe.strategies.layers import Layout
from ftpipe.tasks import get_task


def task_type(config: Config) -> str:
    """PEFT's task type for the configured task."""
    return get_task(config.data.task).peft_task_type


def head_to_save(layout: Layout, config: Config) -> list[str] | None:
    """Names of the new head's modules that hold parameters, for `modules_to_save`."""
    if not get_task(config.data.task).new_head:
        return None
    return [name for name, module in layout.head if any(True for _ in module.parameters())]


def prompt_dimensions(model: nn.Module) -> dict[str, int]:
    """The sizes prompt-learning methods need, read through the config's standard names.

    PEFT looks these up under model-specific keys and misses some models (DistilBERT); the
    standard attribute names map to the right keys on every transformers config.
    """
    config = model.config
    return {
        "token_dim": config.hidden_size,
        "num_attention_heads": config.num_attention_heads,
        "num_layers": config.num_hidden_layers,
        "num_transformer_submodules": 1,
    }


def wrap(model: nn.Module, peft_config: Any, strategy: str) -> nn.Module:
    """Wrap the model with a PEFT config, turning PEFT's refusals into a clear error."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise FtpipeError(
            f"strategy.name={strategy} cannot be applied to {type(model).__name__}: "
            f"{reason(exc)}. Choose another strategy for this model (lora and prompt-tuning work "
            "on every supported architecture)."
        ) from None


def linear_leaf_names(layout: Layout) -> list[str]:
    """Distinct names of the linear layers inside the transformer blocks."""
    names = {
        name.rsplit(".", 1)[-1]
        for _, block in layout.blocks
        for name, module in block.named_modules()
        if isinstance(module, nn.Linear)
    }
    return sorted(names)
