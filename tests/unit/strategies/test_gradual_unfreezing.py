"""Gradual unfreezing: the schedule reaches every group, and the real loop follows it."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ftpipe.strategies.gradual_unfreezing import UnfreezeSchedule
from ftpipe.train.local import train_local
from tests.helpers import train_config


def schedule(every: int | float | None, groups: int = 7) -> UnfreezeSchedule:
    params = [[nn.Parameter(torch.zeros(1), requires_grad=False)] for _ in range(groups)]
    return UnfreezeSchedule(params, [f"group {i}" for i in range(groups)], every)


def trainable(plan: UnfreezeSchedule) -> int:
    return sum(all(p.requires_grad for p in group) for group in plan.groups)


@pytest.mark.parametrize("total_steps", [7, 30, 100, 1000])
def test_by_default_every_group_trains_by_the_middle_of_training(total_steps):
    plan = schedule(None)
    assert plan.apply(0, total_steps) == 0  # the head alone first
    counts = [plan.apply(step, total_steps) for step in range(total_steps)]
    assert counts == sorted(counts), "groups are only ever added"
    middle = -(-total_steps // 2)  # the first step with half of training done
    assert counts[middle] == len(plan.groups) == trainable(plan)


@pytest.mark.parametrize(("every", "interval"), [(5, 5), (0.1, 10), (0.001, 1)])
def test_steps_or_a_fraction_of_training_set_the_interval(every, interval):
    plan = schedule(every)
    assert plan.apply(interval - 1, 100) == 0
    assert plan.apply(interval, 100) == 1
    assert plan.apply(3 * interval, 100) == min(3, len(plan.groups))


def test_a_resumed_run_unfreezes_at_once_what_the_interrupted_run_had():
    plan = schedule(4)
    assert plan.apply(13, 100) == 3 == trainable(plan)


def test_the_loop_unfreezes_every_group_and_each_trains(tmp_path, tiny_model_dir, caplog):
    # One epoch, so its one evaluation exports the model as it ends.
    config = train_config(tmp_path, tiny_model_dir, "strategy.name=gradual-unfreezing",
                          "train.epochs=1")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="ftpipe.strategies.gradual_unfreezing"):
        outcome = train_local(config)
    unfrozen = [r.getMessage() for r in caplog.records if "unfroze" in r.getMessage()]
    # The tiny model: its top block with the pooler, each lower block, the embeddings.
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    layers = {m.group(1) for name in before if (m := re.search(r"layer\.(\d+)\.", name))}
    assert len(unfrozen) == len(layers) + 1, unfrozen
    steps = [int(re.match(r"step (\d+):", message).group(1)) for message in unfrozen]
    total = outcome.final_metrics["step"]
    assert max(steps) <= -(-total // 2), f"unfrozen at {steps} of {total} steps"
    after = load_file(str(Path(outcome.model_dir) / "model.safetensors"))
    shared = sorted(set(before) & set(after))
    assert any(".embeddings." in name for name in shared)
    for name in shared:
        assert not torch.equal(after[name], before[name]), f"{name} never trained"
