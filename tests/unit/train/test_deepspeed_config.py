"""Our `train` section to a DeepSpeed config: batch arithmetic, precision, ZeRO options."""

from __future__ import annotations

import pytest
import torch

from ftpipe.config.load import validate_config
from ftpipe.errors import ConfigError
from ftpipe.train.deepspeed import batch_plan, deepspeed_config, resolve_precision


def train_section(**values):
    return validate_config({"data": {"train": "unused.csv"}, "train": values}).train


@pytest.mark.parametrize(
    ("values", "world", "expected"),
    [
        ({"batch_size": 32, "num_workers": 2}, 2, (16, 1)),
        ({"batch_size": 64, "micro_batch_size": 8, "num_workers": 2}, 2, (8, 4)),
        ({"batch_size": 32, "micro_batch_size": 4, "num_workers": 2}, 1, (4, 8)),
    ],
)
def test_global_batch_is_micro_times_accumulation_times_world(values, world, expected):
    plan = batch_plan(train_section(**values), world)
    assert (plan.micro, plan.accumulation) == expected
    assert plan.global_batch == values["batch_size"]
    config = deepspeed_config(train_section(**values), plan, "fp32")
    assert config["train_batch_size"] == (
        config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * world
    )


def test_a_batch_that_does_not_divide_is_refused_at_load_with_the_keys():
    with pytest.raises(ConfigError) as error:
        train_section(batch_size=30, micro_batch_size=4, num_workers=2)
    assert "train.batch_size=30" in str(error.value) and "micro_batch_size" in str(error.value)


def test_the_world_size_the_run_actually_gets_is_checked_too():
    with pytest.raises(ConfigError, match="multiple of 24"):
        batch_plan(train_section(batch_size=32, micro_batch_size=8, num_workers=1), 3)


def test_half_precision_on_cpu_is_an_error_and_auto_means_fp32():
    cpu = torch.device("cpu")
    assert resolve_precision(train_section(), cpu) == "fp32"
    with pytest.raises(ConfigError, match=r"train\.precision=bf16 needs a GPU"):
        resolve_precision(train_section(precision="bf16"), cpu)


def test_zero_options_map_to_deepspeed_keys():
    train = train_section(zero_stage=3, offload_optimizer=True, max_grad_norm=0.5)
    config = deepspeed_config(train, batch_plan(train, 2), "bf16")
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"] == {"enabled": True} and not config["fp16"]["enabled"]


def test_feature_extraction_under_zero3_is_refused():
    with pytest.raises(ConfigError, match=r"cannot run with train\.zero_stage=3"):
        validate_config(
            {
                "data": {"train": "unused.csv"},
                "strategy": {"name": "feature-extraction"},
                "train": {"zero_stage": 3},
            }
        )


@pytest.mark.parametrize(
    ("values", "world", "expected"),
    [
        ({"batch_size": 16, "num_workers": [1, 2]}, 2, (8, 1)),  # micro: batch / most workers
        ({"batch_size": 16, "num_workers": [1, 2]}, 1, (8, 2)),
        ({"batch_size": 48, "micro_batch_size": 4, "num_workers": [1, 4]}, 3, (4, 4)),
        ({"batch_size": 48, "micro_batch_size": 4, "num_workers": [1, 4]}, 1, (4, 12)),
    ],
)
def test_an_elastic_run_keeps_its_global_batch_as_workers_come_and_go(values, world, expected):
    plan = batch_plan(train_section(**values), world)
    assert (plan.micro, plan.accumulation, plan.global_batch) == (*expected, values["batch_size"])


def test_a_worker_range_whose_counts_do_not_all_divide_the_batch_is_refused():
    with pytest.raises(ConfigError, match=r"train\.num_workers \(3\).*or the worker range"):
        train_section(batch_size=16, num_workers=[1, 4])  # 16 / 4 = micro 4; 3 x 4 != 16
    with pytest.raises(ConfigError, match=r"1 <= min <= max"):
        train_section(num_workers=[3, 2])
