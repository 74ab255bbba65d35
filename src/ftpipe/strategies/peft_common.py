"""What every PEFT strategy shares: the task type, the head to keep training, the wrap.

The classification head is new, so it always trains (PEFT's `modules_to_save`); for causal
LMs the output layer is pretrained (and often tied to the embeddings), so nothing is added.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ftpipe.errors import FtpipeError, reason
from ftpipe.strategies.base import is_causal_lm
from ftpipe.strategies.layers import Layout


def task_type(model: nn.Module) -> str:
    """PEFT's task type for the model: causal LM or sequence classification."""
    return "CAUSAL_LM" if is_causal_lm(model) else "SEQ_CLS"


def head_to_save(model: nn.Module, layout: Layout) -> list[str] | None:
    """Names of the head modules that hold parameters, for `modules_to_save`."""
    if is_causal_lm(model):
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
