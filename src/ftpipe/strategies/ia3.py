"""`ia3`: learned vectors that rescale activations; far fewer parameters than LoRA."""

from torch import nn

from ftpipe.config.schema import Config
from ftpipe.strategies.base import register
from ftpipe.strategies.layers import Layout
from ftpipe.strategies.peft_common import head_to_save, linear_leaf_names, task_type, wrap


@register("ia3")
def ia3(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Wrap the model with IA3 scaling vectors."""
    from peft import IA3Config
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
    )
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

    kind = model.config.model_type
    # Where PEFT has no mapping, rescale the output of every linear layer in the blocks.
    targets = TARGETS.get(kind) or linear_leaf_names(layout)
    feedforward = FEEDFORWARD.get(kind) if kind in TARGETS else []
    return wrap(
        model,
        IA3Config(
            task_type=task_type(config),
            target_modules=list(targets),
            feedforward_modules=list(feedforward),
            modules_to_save=head_to_save(layout, config),
        ),
        "ia3",
    )
