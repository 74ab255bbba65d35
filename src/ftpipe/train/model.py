"""Load the base model for training, and the tokenizer that goes with it."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ftpipe.config.schema import Config
from ftpipe.errors import FtpipeError, reason
from ftpipe.hub import resolve_model
from ftpipe.strategies.qlora import quantized_loading
from ftpipe.tasks import LabelMap, get_task


def load_base_model(config: Config, labels: LabelMap | None, ds_config: dict | None = None):
    """Load the pretrained model with the head of `data.task` (sized to `labels` if it has one).

    Under ZeRO-3 an `HfDeepSpeedConfig` must exist before `from_pretrained`: transformers then
    builds the model inside `deepspeed.zero.Init`, so each rank materialises only its shard
    instead of the whole model in host memory. It stays registered (returned as the second
    value) for as long as the caller keeps it. For `strategy.name=qlora` the base loads in
    4 bits on this rank's GPU (`ftpipe.strategies.qlora.quantized_loading`).

    Raises:
        ConfigError: If the strategy needs what this machine lacks (qlora: a GPU, bitsandbytes).
        FtpipeError: If the model cannot be loaded.
    """
    from transformers.integrations import HfDeepSpeedConfig

    quantized = quantized_loading(config)  # refuses qlora here before any weight is read
    zero3 = None
    if ds_config is not None and ds_config["zero_optimization"]["stage"] == 3:
        zero3 = HfDeepSpeedConfig(ds_config)
    # fp32 master weights whatever the checkpoint's dtype: DeepSpeed casts for bf16/fp16 itself,
    # and train.precision=fp32 must not silently train a bf16 checkpoint in bf16.
    task = get_task(config.data.task)
    try:
        model = task.load_model(
            resolve_model(config.model.name), labels,
            revision=config.model.revision, dtype=torch.float32, **quantized,
        )  # fmt: skip
    except Exception as exc:  # Hub and file errors come in many types
        raise FtpipeError(
            f"Cannot load model.name={config.model.name!r} for training: {reason(exc)}. Use the "
            "built-in alias all-MiniLM-L6-v2 or a local model directory with safetensors."
        ) from None
    if getattr(model.config, "pad_token_id", None) is None:
        # Decoders often ship without a pad token. Their classifier finds each row's last
        # token as the last one that is not the pad id, so that id must never occur in the
        # text: EOS, which prep never appends, is the convention.
        tokenizer = load_tokenizer_for_export(config)
        model.config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id or 0
    return model, zero3


@contextmanager
def zero3_paused():
    """Build models normally (not sharded) inside, even while a ZeRO-3 run is registered."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def load_tokenizer_for_export(config: Config):
    """The base model's tokenizer (the one prep used), for saving beside the weights."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        resolve_model(config.model.name), revision=config.model.revision, trust_remote_code=False
    )
