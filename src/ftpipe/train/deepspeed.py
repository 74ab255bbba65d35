"""DeepSpeed config arithmetic: our `train` section in, a DeepSpeed config dict out.

Kept apart from the loop so the batch arithmetic and precision choice can be read (and
tested) without starting a process group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ftpipe.config.schema import TrainConfig
from ftpipe.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    """How the global batch splits: micro x accumulation x world == global."""

    micro: int
    accumulation: int
    world_size: int

    @property
    def global_batch(self) -> int:
        """Rows per optimizer step over all ranks."""
        return self.micro * self.accumulation * self.world_size

    @property
    def per_rank(self) -> int:
        """Rows one rank consumes per optimizer step."""
        return self.micro * self.accumulation


def batch_plan(train: TrainConfig, world_size: int) -> BatchPlan:
    """Split `train.batch_size` over `world_size` ranks.

    Raises:
        ConfigError: If the global batch is not micro x accumulation x world.
    """
    micro = train.micro_batch(world_size)
    accumulation, remainder = divmod(train.batch_size, micro * world_size)
    if remainder or accumulation < 1:
        raise ConfigError(
            f"train.batch_size={train.batch_size} is not train.micro_batch_size ({micro}) x "
            f"gradient accumulation x {world_size} workers. Use a batch_size that is a multiple "
            f"of {micro * world_size}, or change train.micro_batch_size."
        )
    return BatchPlan(micro, accumulation, world_size)


def resolve_precision(train: TrainConfig, device: torch.device) -> str:
    """`fp32`, `bf16` or `fp16`: `auto` is bf16 where the GPU supports it, fp32 on CPU.

    Raises:
        ConfigError: If half precision is asked for on CPU.
    """
    if device.type != "cuda":
        if train.precision in ("bf16", "fp16"):
            raise ConfigError(
                f"train.precision={train.precision} needs a GPU, but this worker runs on CPU. "
                "Use train.precision=auto (fp32 on CPU) or give the workers GPUs."
            )
        return "fp32"
    if train.precision != "auto":
        return train.precision
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def deepspeed_config(train: TrainConfig, plan: BatchPlan, precision: str) -> dict[str, Any]:
    """The DeepSpeed config for one run.

    The optimizer and scheduler are ours (passed to `deepspeed.initialize`), so they are not
    declared here; `zero_allow_untested_optimizer` lets ZeRO wrap torch's AdamW.
    """
    zero: dict[str, Any] = {"stage": train.zero_stage}
    offload = train.offload_optimizer and train.zero_stage
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if train.zero_stage == 3:
        # Export gathers the sharded weights into one state dict on rank 0.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro,
        "gradient_accumulation_steps": plan.accumulation,
        "gradient_clipping": train.max_grad_norm,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        # Offload steps our torch AdamW on the host (DeepSpeed would insist on its own compiled
        # CPU Adam, an extra build on every machine).
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "initial_scale_power": 16},
        "steps_per_print": 10**9,  # our loop logs progress; DeepSpeed's own lines are noise
        "wall_clock_breakdown": False,
    }
