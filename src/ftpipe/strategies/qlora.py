"""`qlora`: LoRA adapters on a base model loaded in 4 bits (Dettmers et al., 2023).

The base weights are stored as 4-bit NormalFloat (nf4) with their quantization constants
quantized again (double quantization), and computed in bf16; only the adapters train, in
full precision. The base takes about a quarter of its bf16 memory, so a model that would not
fit a GPU for LoRA does. bitsandbytes quantizes on CUDA GPUs only: on a CPU worker, or where
bitsandbytes is not installed, the strategy is refused before the model loads
(`ftpipe.train.model.load_base_model`) and again where it is prepared.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from ftpipe.config.schema import Config
from ftpipe.errors import ConfigError, FtpipeError
from ftpipe.strategies.base import register
from ftpipe.strategies.layers import Layout
from ftpipe.strategies.lora import lora


def qlora_problem() -> str | None:
    """Why this machine cannot train `qlora`, or None if it can."""
    if not torch.cuda.is_available():
        why = "which quantizes on CUDA GPUs only, and this worker has none"
    elif importlib.util.find_spec("bitsandbytes") is None:
        why = "which is not installed here (pip install bitsandbytes)"
    else:
        return None
    return (
        f"strategy.name=qlora trains LoRA adapters on a 4-bit base model through bitsandbytes, "
        f"{why}. Use strategy.name=lora (the same adapters on the full-precision base), or run "
        "on a GPU worker with bitsandbytes installed."
    )


def quantized_loading(config: Config) -> dict[str, Any]:
    """The extra `from_pretrained` arguments of the configured strategy's base model.

    For `qlora`: the 4-bit config (nf4, double quantization, bf16 compute) and this rank's GPU;
    for every other strategy none.

    Raises:
        ConfigError: For `qlora`, if this machine cannot quantize (`qlora_problem`).
    """
    if config.strategy.name != "qlora":
        return {}
    problem = qlora_problem()
    if problem is not None:
        raise ConfigError(problem)
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    # Each rank holds the whole quantized base on its own GPU (set by init_distributed).
    return {"quantization_config": quantization, "device_map": {"": torch.cuda.current_device()}}


@register("qlora")
def qlora(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Freeze the 4-bit base, keep its norms in fp32, and add LoRA adapters (`strategy.lora`).

    Raises:
        ConfigError: If this machine cannot quantize.
        FtpipeError: If the model was not loaded in 4 bits (`quantized_loading`).
    """
    from peft import prepare_model_for_kbit_training

    problem = qlora_problem()
    if problem is not None:
        raise ConfigError(problem)
    if not getattr(model, "is_loaded_in_4bit", False):
        raise FtpipeError(
            f"strategy.name=qlora needs the base model loaded in 4 bits, and this "
            f"{type(model).__name__} is not: load it with ftpipe.train.model.load_base_model, "
            "which quantizes it for qlora."
        )
    # Gradient checkpointing stays ftpipe's choice (train.gradient_checkpointing).
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return lora(model, layout, config)
