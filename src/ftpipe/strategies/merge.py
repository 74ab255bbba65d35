"""Fold an adapter into the base weights, so the export is a plain transformers model."""

from torch import nn


def merge_adapter(model: nn.Module) -> nn.Module:
    """Return the model with LoRA/IA3 weights merged in; other models come back unchanged.

    Prompt-learning adapters add tokens rather than weights, so they cannot be merged and are
    exported with their adapter.
    """
    from peft import PeftModel

    if (
        isinstance(model, PeftModel)
        and not model.peft_config[model.active_adapter].is_prompt_learning
    ):
        return model.merge_and_unload()
    return model
