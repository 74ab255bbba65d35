"""`lora`: low-rank adapters on chosen linear layers; the base weights stay frozen.

Targets default to PEFT's per-architecture choice (the attention projections) where PEFT knows
the model, else every linear layer in the blocks; `strategy.lora.target_modules` overrides.
"""

from torch import nn

from ftpipe.config.schema import Config
from ftpipe.errors import FtpipeError
from ftpipe.strategies.base import register
from ftpipe.strategies.layers import Layout
from ftpipe.strategies.peft_common import head_to_save, linear_leaf_names, task_type, wrap


@register("lora")
def lora(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Wrap the model with LoRA adapters."""
    from peft import LoraConfig

    settings = config.strategy.lora
    if settings.target_modules:
        known = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = sorted(set(settings.target_modules) - known)
        if missing:
            raise FtpipeError(
                f"strategy.lora.target_modules names {', '.join(map(repr, missing))}, which "
                f"{type(model).__name__} does not have. Linear layers in its blocks: "
                f"{', '.join(linear_leaf_names(layout))}."
            )
    return wrap(
        model,
        LoraConfig(
            task_type=task_type(config),
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules or default_targets(model, layout)),
            modules_to_save=head_to_save(layout, config),
        ),
        "lora",
    )


def default_targets(model: nn.Module, layout: Layout) -> list[str]:
    """PEFT's LoRA targets for this architecture, or every linear layer in the blocks."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    known = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model.config.model_type)
    return list(known) if known else linear_leaf_names(layout)
