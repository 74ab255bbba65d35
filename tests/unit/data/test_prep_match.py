"""train, tune and evaluate refuse prepared data that was made with another config."""

from __future__ import annotations

import os

import pytest

from ftpipe.config import apply_overrides
from ftpipe.config.load import validate_config
from ftpipe.data import run_prep
from ftpipe.data.prepared import PrepDir
from ftpipe.errors import ConfigError
from tests.helpers import balanced_rows, write_csv


@pytest.fixture
def prepared(tmp_path, tiny_model_dir):
    """A config prep has run with (every output under tmp_path), and a builder of variants.

    The strategy is set, so nothing but the check stands between a stage and its work: before
    the check, `ftpipe train` trained on these outputs whatever its data keys said.
    """
    train = write_csv(tmp_path / "train.csv", balanced_rows(20))
    raw = {
        "data": {"train": str(train), "output_dir": str(tmp_path / "prep"), "max_length": 16,
                 "eval_fraction": 0.3},
        "model": {"name": str(tiny_model_dir)},
        "strategy": {"name": "full"},
        "train": {"output_dir": str(tmp_path / "train"), "cache_dir": str(tmp_path / "cache"),
                  "epochs": 1, "num_workers": 1, "batch_size": 4},
        "tune": {"output_dir": str(tmp_path / "tune")},
        "evaluate": {"output_dir": str(tmp_path / "evaluate")},
        "registry": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }  # fmt: skip
    config = validate_config(raw)
    run_prep(config)

    def variant(*overrides: str):
        return validate_config(apply_overrides(config.model_dump(mode="json"), overrides))

    return config, variant


def test_the_config_prep_ran_with_passes(prepared, tmp_path, monkeypatch):
    config, variant = prepared
    PrepDir.check_config(config, "train")
    monkeypatch.chdir(tmp_path)  # the same input, named relative to the working directory
    PrepDir.check_config(variant("data.train=train.csv", "train.epochs=9", "seed=3"), "train")


def test_train_refuses_another_input_or_label_column_naming_both_values(prepared):
    from ftpipe.stages import train

    config, variant = prepared
    changed = variant("data.train=/nonexistent.csv", "data.label_column=nope")

    with pytest.raises(ConfigError) as raised:
        train.run(changed, no_ray=True)

    message = str(raised.value)
    assert 'data.label_column is "nope" here but was "label"' in message
    assert f'data.train is "/nonexistent.csv" here but was "{config.data.train}"' in message
    assert "ftpipe prep" in message and config.data.output_dir in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.labels=[good, bad, ugly]", "data.labels"),
        ("data.task=causal-lm", "data.task"),
        ("data.max_length=32", "data.max_length"),
        ("data.text_pair_column=other", "data.text_pair_column"),
        ("model.revision=main", "model.revision"),
        ("data.eval_fraction=0.5", "data.eval_fraction"),
        ("data.test_fraction=0.2", "data.test_fraction"),
        ("data.test=/elsewhere/test.csv", "data.test"),
    ],
)
def test_tune_refuses_any_key_that_defines_the_prepared_data(prepared, override, key):
    from ftpipe.stages import tune

    _, variant = prepared
    with pytest.raises(ConfigError, match=rf"{key} is .* here but was "):
        tune.run(variant(override))


def test_evaluate_refuses_other_data_but_not_another_tokenization(prepared, tmp_path):
    from ftpipe.stages import evaluate

    _, variant = prepared
    with pytest.raises(ConfigError, match=r"data\.label_column"):
        evaluate.run(variant("data.label_column=nope"), model=str(tmp_path / "no-model"))
    # The model re-tokenizes the held-out texts, so keys that only change token ids pass there.
    retokenized = variant("data.max_length=32")
    PrepDir.check_config(retokenized, "evaluate", tokenization=False)
    with pytest.raises(ConfigError, match=r"data\.max_length is 32 here but was 16"):
        PrepDir.check_config(retokenized, "train")


def test_a_directory_without_prep_output_is_left_to_the_stage(prepared, tmp_path):
    _, variant = prepared
    config = variant(f"data.output_dir={tmp_path / 'nowhere'}")
    PrepDir.check_config(config, "train")  # nothing to compare: the stage says "run prep"
    assert not os.path.exists(config.data.output_dir)
