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
        # A lone process has no one to meet: an in-memory store instead of a rendezvous
        # server (torch's TCPStore listens on every interface, and anyone who reaches it can
        # write the addresses the ranks connect to). No port either, so none to pass on.
        keep_to_loopback()
        torch.distributed.init_process_group(
            backend, store=torch.distributed.HashStore(), rank=0, world_size=1
        )
    # DeepSpeed reads these even when the group exists (Ray Train does not set them).
    for name, value in (("RANK", ctx.rank), ("LOCAL_RANK", ctx.local_rank),
                        ("WORLD_SIZE", ctx.world_size)):  # fmt: skip
        os.environ.setdefault(name, str(value))
    deepspeed.init_distributed(dist_backend=backend)


def keep_to_loopback() -> None:
    """Have gloo and NCCL listen for their peers on the loopback interface only.

    For a process group whose ranks all run on this machine. Each rank listens for its peers on
    one interface's address: gloo's on the one this machine's hostname resolves to, NCCL's on
    the first non-loopback interface, both reachable from the network. Both read the interface
    from the environment when they set up (NCCL at its first communicator, which may come
    later), so it is set for this process for good; child processes inherit it, which keeps a
    group they start on this machine on loopback too.
    """
    names = {name for _, name in socket.if_nameindex()}
    loopback = "lo0" if "lo0" in names else "lo"  # macOS, Linux
    os.environ["GLOO_SOCKET_IFNAME"] = loopback
    os.environ["NCCL_SOCKET_IFNAME"] = f"={loopback}"  # "=": this name exactly, not a prefix
