"""Ray Train's torch process group, set up on loopback when every worker is on this machine.

Rank 0 hosts the group's rendezvous store, torch's TCPStore, which listens on every interface
(it has no bind-address option), and whoever reaches it can write the addresses the ranks
then connect to. On a local Ray (`ensure_ray` starts it at 127.0.0.1) rank 0 hosts the store
on a socket bound to 127.0.0.1 instead, and gloo and NCCL listen on the loopback interface.
On a cluster, Ray's own set-up applies: workers on other nodes reach rank 0 at its node address.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import ray
import torch.distributed as dist
from ray.train._internal.base_worker_group import BaseWorkerGroup
from ray.train._internal.utils import get_address_and_port
from ray.train.torch.config import TorchConfig, _set_torch_distributed_env_vars, _TorchBackend

from ftpipe.train.distributed import keep_to_loopback


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """Ray's TorchConfig, whose process group meets on loopback when rank 0's node address is.

    A node address on loopback means every worker is on this machine: workers elsewhere could
    not reach it.
    """

    @property
    def backend_cls(self) -> type[_TorchBackend]:
        """The backend that sets the group up (Ray Train instantiates it)."""
        return _LoopbackTorchBackend


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group: BaseWorkerGroup, backend_config: TorchConfig) -> None:
        """Start the process group: on loopback on a local Ray, else as Ray does.

        Args:
            worker_group: Ray Train's group of workers (an execution group in Train V2).
            backend_config: The trainer's TorchConfig; TorchTrainer has set its backend.
        """
        # Ray's own choice of rendezvous address and port (it runs this on rank 0 too).
        address, port = worker_group.execute_single(0, get_address_and_port)
        if not ipaddress.ip_address(address).is_loopback:
            super().on_start(worker_group, backend_config)
            return
        worker_group.execute(_set_torch_distributed_env_vars)  # RANK, LOCAL_RANK, ... as Ray's
        size = len(worker_group)
        ray.get([
            worker_group.execute_single_async(
                rank, _join, backend=backend_config.backend, address=address, port=port,
                world_rank=rank, world_size=size, timeout_s=backend_config.timeout_s,
            )
            for rank in range(size)
        ])  # fmt: skip


def _join(backend: str, address: str, port: int, world_rank: int, world_size: int,
          timeout_s: int) -> None:  # fmt: skip
    """In a worker: join the process group whose store rank 0 hosts at `address`:`port`."""
    keep_to_loopback()
    # As Ray's env:// set-up leaves them; DeepSpeed looks for them.
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(port)
    timeout = timedelta(seconds=timeout_s)
    listener = None
    if world_rank == 0:
        # Bound here, so the store listens on `address` alone; the store takes the socket over.
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        listener = socket.create_server((address, port), family=family).detach()
    store = dist.TCPStore(address, port, world_size, is_master=world_rank == 0, timeout=timeout,
                          master_listen_fd=listener)  # fmt: skip
    dist.init_process_group(backend, store=store, rank=world_rank, world_size=world_size,
                            timeout=timeout)  # fmt: skip
