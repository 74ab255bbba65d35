import math

import pytest
import torch

from ftpipe.config.load import validate_config
from ftpipe.strategies import prepare
from ftpipe.strategies.param_groups import describe, param_groups
from ftpipe.strategies.schedules import build_scheduler, lr_multiplier, warmup_steps
from tests.unit.strategies.test_strategy_table import build


def train_config(**train):
    return validate_config({"data": {"train": "x.csv"}, "train": train}).train


@pytest.mark.parametrize(
    ("train", "total", "expected"),
    [
        ({"warmup_steps": 10}, 100, 10),
        ({"warmup_ratio": 0.25}, 100, 25),
        ({"warmup_ratio": 0.0}, 7, 0),
        ({"warmup_steps": 500}, 100, 100),
    ],
)
def test_warmup_length_from_steps_or_ratio(train, total, expected):
    assert warmup_steps(train_config(**train), total) == expected


def test_warmup_rises_then_each_schedule_decays_as_named():
    linear, cosine, constant = (
        lr_multiplier(kind, 4, 20) for kind in ("linear", "cosine", "constant")
    )
    assert [round(linear(s), 3) for s in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert linear(12) == pytest.approx(0.5) and linear(20) == 0.0
    assert cosine(12) == pytest.approx(0.5) and cosine(8) == pytest.approx(
        0.5 * (1 + math.cos(math.pi / 4))
    )
    assert cosine(20) == pytest.approx(0.0)
    assert constant(4) == constant(19) == 1.0


def test_scheduler_scales_every_group_by_the_same_factor():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "lr": 1.0}, {"params": [model.bias], "lr": 0.1}]
    )
    scheduler = build_scheduler(optimizer, train_config(warmup_steps=1, schedule="linear"), 3)
    seen = []
    for _ in range(3):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx([0.5, 0.05])
    assert seen[1] == pytest.approx([1.0, 0.1])
    assert seen[2] == pytest.approx([0.5, 0.05])


def test_groups_are_reported_as_parameter_counts_per_learning_rate():
    config = validate_config(
        {
            "data": {"train": "x.csv"},
            "strategy": {"name": "full"},
            "train": {"lr": 1e-5, "head_lr": 1e-4, "layer_decay": 0.5},
        }
    )
    prepared = prepare(build("bert", "classifier"), config)
    lines = describe(param_groups(prepared, config.train))
    head = sum(p.numel() for _, m in prepared.layout.head for p in m.parameters())
    assert f"lr 1.00e-04: {head:,} new parameters" in lines
    assert any(line.startswith("lr 2.50e-06: ") for line in lines)  # embeddings: 1e-5 * 0.5**2
    total = sum(int(line.split(": ")[1].split()[0].replace(",", "")) for line in lines)
    assert total == sum(p.numel() for p in prepared.model.parameters())


def test_groups_are_logged(caplog):
    config = validate_config({"data": {"train": "x.csv"}, "strategy": {"name": "lora"}})
    with caplog.at_level("INFO", logger="ftpipe.strategies.param_groups"):
        param_groups(prepare(build("bert", "classifier"), config), config.train)
    assert any(r.getMessage().startswith("lr 1.00e-04: ") for r in caplog.records)
