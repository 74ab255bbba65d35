"""The plain-PyTorch side of bench/train_overhead.py, and the gradient reduction it tries.

- `plain_loop`: AdamW over exactly the rows ftpipe's core reads, nothing else; in a process
  group it is plain torch DDP (the reference Ray Train measures itself against).
- `ddp_speed`: that DDP loop in two gloo processes, one CPU thread each.
- `allreduce_seconds`: one step's gradient all-reduce timed alone, flattened or in place.
- `ray_worker_with_deepspeeds_reduction`: a Ray Train worker running the core with
  DeepSpeed's own ZeRO-0 reduction instead of the core's in-place average, so the bench keeps
  measuring what that change bought.
"""

from __future__ import annotations

import json
import socket
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ftpipe.config.load import validate_config
from ftpipe.data.prepared import PreparedData, batches, load_prepared
from ftpipe.train.batching import rank_order
from ftpipe.train.model import load_base_model
from ftpipe.train.reduction import average_gradients

Plan = tuple[int, int, int, int]
"""Steps, warm-up steps, rows per micro-batch, micro-batches per step: the same on every path."""


@dataclass
class Speed:
    """Per-worker training samples/s over the warm-up steps and over the steps after them.

    Attributes:
        warmup: Samples/s over the first warm-up steps.
        steady: Samples/s over the steps after them.
        outside: Wall seconds outside training steps (start-up, evaluations, checkpoints),
            where a path measures it.
    """

    warmup: float
    steady: float
    outside: float | None = None


def mean(speeds: list[Speed]) -> Speed:
    """The field-by-field mean of several runs of one path."""
    outside = [s.outside for s in speeds if s.outside is not None]
    return Speed(
        warmup=sum(s.warmup for s in speeds) / len(speeds),
        steady=sum(s.steady for s in speeds) / len(speeds),
        outside=sum(outside) / len(outside) if outside else None,
    )


def plain_loop(config: Any, data: PreparedData, plan: Plan, rank: int = 0, world: int = 1) -> Speed:
    """Samples/s of a plain loop over exactly the rows this rank of our core reads.

    With `world` above 1 (a process group must exist) the model is wrapped in torch DDP, which
    all-reduces gradients in buckets while the step's last backward pass runs; the other
    micro-batches run under `no_sync()`, as the core reduces once per step too.
    """
    steps, warmup, micro, accumulation = plan
    torch.manual_seed(config.seed)
    model, _ = load_base_model(config, data.labels)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else None
    forward = ddp or model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    split = data.splits["train"]
    per_rank = micro * accumulation
    order = rank_order(split.lengths, config.seed, 0, rank, world, per_rank)[: steps * per_rank]
    model.train()
    step_ends = [time.perf_counter()]
    for i, (rows, batch) in enumerate(batches(split, micro, 0, order)):
        batch["labels"] = data.task.targets(split, rows, batch)
        last = (i + 1) % accumulation == 0
        with ddp.no_sync() if ddp and not last else nullcontext():
            (forward(**batch).loss / accumulation).backward()
        if last:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            step_ends.append(time.perf_counter())
    return Speed(
        warmup=warmup * per_rank / (step_ends[warmup] - step_ends[0]),
        steady=(steps - warmup) * per_rank / (step_ends[-1] - step_ends[warmup]),
    )


def plain_process(args: tuple[dict[str, Any], Plan]) -> Speed:
    """One plain loop in its own process (torch threads 1), for the concurrent baseline."""
    raw, plan = args
    torch.set_num_threads(1)
    config = validate_config(raw)
    return plain_loop(config, load_prepared(config.data.output_dir), plan)


def _ddp_rank(rank: int, raw: dict[str, Any], plan: Plan, port: int, out: str) -> None:
    """One of two torch DDP processes: gloo, one CPU thread, this rank's speed to `out`."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)  # fmt: skip
    config = validate_config(raw)
    speed = plain_loop(config, load_prepared(config.data.output_dir), plan, rank, 2)
    Path(out, f"ddp-{rank}.json").write_text(json.dumps(asdict(speed)))
    dist.destroy_process_group()


def ddp_speed(config: Any, plan: Plan, workdir: Path) -> Speed:
    """Per-worker samples/s of plain torch DDP in two processes (the mean of the two ranks)."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_rank, args=(config.model_dump(mode="json"), plan, _free_port(), str(workdir)),
             nprocs=2)  # fmt: skip
    return mean([Speed(**json.loads((workdir / f"ddp-{r}.json").read_text())) for r in (0, 1)])


def _allreduce_rank(rank: int, shapes: list[tuple[int, ...]], port: int, out: str) -> None:
    """One of two gloo ranks timing one step's gradient all-reduce, two ways.

    DeepSpeed's ZeRO-0 way flattens every gradient into one buffer, reduces it and copies it
    back; the core's way (ftpipe.train.reduction) averages each gradient where it lies. Each
    way's median of 5 rounds.
    """
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)  # fmt: skip
    grads = [torch.randn(shape) for shape in shapes]
    module = torch.nn.ParameterList(torch.nn.Parameter(torch.empty_like(g)) for g in grads)
    for param, grad in zip(module, grads, strict=True):
        param.grad = grad
    seconds: dict[str, list[float]] = {"flattened": [], "in place": []}
    for way in list(seconds) * 5:
        dist.barrier()
        started = time.perf_counter()
        if way == "flattened":
            flat = _flatten_dense_tensors(grads)
            dist.all_reduce(flat)
            flat.div_(2)
            for grad, reduced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
                grad.copy_(reduced)
        else:
            average_gradients(module)  # the core's own
        seconds[way].append(time.perf_counter() - started)
    if rank == 0:
        Path(out).write_text(json.dumps({way: sorted(t)[2] for way, t in seconds.items()}))
    dist.destroy_process_group()


def allreduce_seconds(model: torch.nn.Module, workdir: Path) -> dict[str, float]:
    """Seconds per all-reduce of `model`'s gradients between two processes, alone."""
    import torch.multiprocessing as mp

    shapes = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
    out = workdir / "allreduce.json"
    mp.spawn(_allreduce_rank, args=(shapes, _free_port(), str(out)), nprocs=2)
    return json.loads(out.read_text())


def ray_worker_with_deepspeeds_reduction(loop_config: dict[str, Any]) -> None:
    """ftpipe's Ray Train worker, its gradients reduced by DeepSpeed's flatten-and-copy.

    It runs in a Ray worker process of its own (bench/, the driver's script directory, is on
    the workers' path), so switching the core's in-place average off here changes no other run.
    """
    from ftpipe.train import ray_train, setup

    setup.reduces_in_place = lambda zero_stage, precision: False
    ray_train._worker(loop_config)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
