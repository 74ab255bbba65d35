"""The sweep's search space: samplers parsed and every path validated like the config."""

from __future__ import annotations

import pytest

from ftpipe.config.load import validate_config
from ftpipe.errors import ConfigError
from ftpipe.tune.space import Sampler, parse_space
from ftpipe.tune.sweep import sweep_name

CONFIG = validate_config({"data": {"train": "unused.csv"}})


def test_samplers_parse_with_their_arguments():
    space = parse_space(
        CONFIG,
        {
            "train.lr": "loguniform(1e-5, 5e-4)",
            "train.warmup_ratio": "uniform(0.0, 0.2)",
            "strategy.freeze_layers": "choice([0, 2, 4, 6])",
            "strategy.name": "choice([lora, freeze, full])",
            "strategy.lora.r": "randint(4, 17)",
        },
    )
    assert space["train.lr"] == Sampler("loguniform", (1e-5, 5e-4))
    assert space["strategy.name"] == Sampler("choice", ("lora", "freeze", "full"))
    assert space["strategy.lora.r"].edge_values() == [4, 16]


@pytest.mark.parametrize(
    ("path", "sampler", "message"),
    [
        ("train.lrr", "loguniform(1e-5, 5e-4)", "unknown key `train.lrr`"),
        ("train.lr", "loguniform(0, 1e-3)", "0 < low < high"),
        ("train.lr", "uniform(1e-3, 1e-5)", "low < high"),
        ("train.lr", "normal(0, 1)", "write one of loguniform"),
        ("strategy.name", "choice([lora, bogus])", "can produce 'bogus'"),
        ("train.lr", "loguniform(1e-5, 5)", "can produce 5"),
        ("strategy.freeze_layers", "choice(0, 2)", "with a list"),
        ("strategy.lora.r", "randint(1.5, 8)", "randint takes integers"),
    ],
)
def test_a_bad_path_or_range_is_a_clear_error_naming_the_key(path, sampler, message):
    with pytest.raises(ConfigError) as error:
        parse_space(CONFIG, {path: sampler})
    assert f"tune.search_space.{path}" in str(error.value)
    assert message in str(error.value)


def test_grid_search_needs_choices_and_an_empty_space_says_where_to_get_one():
    with pytest.raises(ConfigError, match="needs choice"):
        parse_space(CONFIG, {"train.lr": "loguniform(1e-5, 5e-4)"}, grid=True)
    with pytest.raises(ConfigError, match="ftpipe recommend"):
        parse_space(CONFIG, {})


def test_the_sweep_name_ignores_run_controls_so_resume_finds_it():
    def named(**tune):
        return sweep_name(validate_config({"data": {"train": "unused.csv"}, "tune": tune}))

    assert named(max_concurrent_trials=1) == named(max_concurrent_trials=4, final="none")
    assert named(num_trials=4) != named(num_trials=8)
