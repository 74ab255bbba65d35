"""The sweep scheduler: how long trials train before a cut, and HyperBand brackets."""

from __future__ import annotations

import pytest

from ftpipe.config.load import validate_config
from ftpipe.tune.space import parse_space
from ftpipe.tune.sweep import _scheduler, grace_epochs


def sweep(space: dict[str, str], **tune) -> tuple:
    config = validate_config(
        {"data": {"train": "unused.csv"}, "strategy": {"name": "full"},
         "train": {"epochs": 6}, "tune": tune}
    )  # fmt: skip
    return config, parse_space(config, space)


@pytest.mark.parametrize(
    ("strategies", "grace"),
    [
        ("[full, freeze, feature-extraction]", 1.0),
        ("[full, lora]", 3.0),  # half of 6 epochs
        ("[feature-extraction, prompt-tuning]", 3.0),
        ("[ia3]", 3.0),
    ],
)
def test_slow_starters_get_half_the_training_before_the_first_cut(strategies, grace):
    assert grace_epochs(*sweep({"strategy.name": f"choice({strategies})"})) == grace


def test_the_grace_follows_the_longest_sampled_training_and_is_at_least_an_epoch():
    space = {"strategy.name": "choice([lora])", "train.epochs": "choice([1, 10])"}
    assert grace_epochs(*sweep(space)) == 5.0
    assert (
        grace_epochs(*sweep({"strategy.name": "choice([lora])", "train.epochs": "choice([1])"}))
        == 1.0
    )


def test_a_set_grace_period_wins_and_a_fixed_strategy_counts():
    assert grace_epochs(*sweep({"train.lr": "loguniform(1e-5, 1e-3)"}, grace_period=0.5)) == 0.5
    config, samplers = sweep({"train.lr": "loguniform(1e-5, 1e-3)"})
    lora = config.model_copy(
        update={"strategy": config.strategy.model_copy(update={"name": "lora"})}
    )
    assert grace_epochs(config, samplers) == 1.0
    assert grace_epochs(lora, samplers) == 3.0


@pytest.mark.parametrize(("kind", "brackets"), [("asha", 1), ("hyperband", 3)])
def test_hyperband_spreads_trials_over_brackets_with_later_first_cuts(kind, brackets):
    scheduler = _scheduler(*sweep({"strategy.name": "choice([full, lora])"}, scheduler=kind))
    assert scheduler._time_attr == "epoch"
    firsts = sorted(bracket._rungs[-1][0] for bracket in scheduler._brackets)
    assert firsts == [3.0 * 3**i for i in range(brackets)]


def test_no_scheduler_runs_every_trial_to_the_end():
    assert _scheduler(*sweep({"train.lr": "loguniform(1e-5, 1e-3)"}, scheduler="none")) is None
