"""Who this process is in a run, and joining the process group."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RankContext:
    """Who this process is in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> RankContext:
        """Read RANK / WORLD_SIZE / LOCAL_RANK, as torchrun and the deepspeed launcher set."""
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )

    @property
    def device(self) -> torch.device:
        """This rank's GPU where there is one, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def init_distributed(ctx: RankContext) -> None:
    """Join the process group: Ray Train and torchrun start one; a lone process gets its own."""
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(ctx.local_rank)
    if not torch.distributed.is_initialized() and "MASTER_ADDR" not in os.environ:
        # A free port of its own, passed directly: environment variables would leak into
        # child processes, which would then try to listen on the same port.
        torch.distributed.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
        )
    # DeepSpeed reads these even when the group exists (Ray Train does not set them).
    for name, value in (("RANK", ctx.rank), ("LOCAL_RANK", ctx.local_rank),
                        ("WORLD_SIZE", ctx.world_size)):  # fmt: skip
        os.environ.setdefault(name, str(value))
    deepspeed.init_distributed(dist_backend=backend)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
