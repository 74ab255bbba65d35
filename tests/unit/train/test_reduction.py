"""Gradients averaged in place equal DeepSpeed's own ZeRO-0 reduction, in 2 real gloo ranks."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from ftpipe.train.reduction import average_gradients, reduces_in_place


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(rank: int, port: int, out: str) -> None:
    import deepspeed

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=2)  # fmt: skip
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")  # DeepSpeed reads
    deepspeed.init_distributed("gloo")
    torch.manual_seed(0)  # the same model on both ranks
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3), torch.nn.Linear(3, 2))
    model[0].requires_grad_(False)  # frozen: never reduced
    config = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 0}}
    engine, *_ = deepspeed.initialize(model=model, config=config,
                                      model_parameters=model.parameters())  # fmt: skip
    torch.manual_seed(1 + rank)  # each rank its own batch, so its own gradients
    model[1:](torch.randn(4, 5)).pow(2).sum().backward()  # model[0] unused: a branch not reached
    own = [p.grad.clone() for p in model[1:].parameters()]

    engine.allreduce_gradients()  # DeepSpeed's flatten-reduce-copy
    deepspeed_grads = [p.grad.clone() for p in model[1:].parameters()]
    for param, grad in zip(model[1:].parameters(), own, strict=True):
        param.grad = grad.clone()
    average_gradients(model)

    Path(out, f"{rank}.json").write_text(json.dumps({
        "own": [g.tolist() for g in own],
        "deepspeed": [g.tolist() for g in deepspeed_grads],
        "in_place": [p.grad.tolist() for p in model[1:].parameters()],
        "frozen_grad": model[0].weight.grad is None,
    }))  # fmt: skip
    torch.distributed.destroy_process_group()


def test_in_place_averages_equal_deepspeeds_bit_for_bit(tmp_path):
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    for rank in ranks:
        assert rank["in_place"] == rank["deepspeed"]  # exactly: the same sum, the same scale
        assert rank["frozen_grad"]  # a frozen parameter is left alone
    assert ranks[0]["in_place"] == ranks[1]["in_place"]
    first = torch.tensor(ranks[0]["own"][0])
    mean = (first + torch.tensor(ranks[1]["own"][0])) / 2
    assert torch.equal(torch.tensor(ranks[0]["in_place"][0]), mean) and not torch.equal(mean, first)


def test_only_fp32_zero0_is_averaged_in_place():
    assert reduces_in_place(0, "fp32")
    assert not reduces_in_place(0, "bf16") and not reduces_in_place(2, "fp32")
