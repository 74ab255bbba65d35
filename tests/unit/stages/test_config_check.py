"""Stages load a config and have its task check the metric names before any stage runs."""

from __future__ import annotations

import pytest
import yaml

from ftpipe.config import load_config
from ftpipe.errors import ConfigError
from ftpipe.stage import load_stage_config
from ftpipe.stages import load_checked_config


def _config_file(tmp_path, task="sequence-classification"):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": str(tmp_path / "t.csv"), "task": task}}))
    return path


@pytest.mark.parametrize(
    ("key", "typo", "allowed"),
    [
        ("train.metric", "acuracy", "use one of accuracy, macro_f1, loss or auto."),
        ("promote.metric", "macro-f1", "use one of macro_f1, accuracy or auto."),
    ],
)
def test_a_metric_typo_fails_naming_the_key_and_the_allowed_names(tmp_path, key, typo, allowed):
    path = _config_file(tmp_path)
    load_config(path, [f"{key}={typo}"])  # metric names are the task's: the config takes any
    with pytest.raises(ConfigError) as raised:
        load_checked_config(path, [f"{key}={typo}"])
    message = str(raised.value)
    assert message.startswith(f"{key}={typo} ") and message.endswith(allowed)
    assert "\n" not in message


def test_a_causal_lm_config_refuses_a_classification_metric(tmp_path):
    path = _config_file(tmp_path, task="causal-lm")
    assert load_checked_config(path).train.metric == "auto"
    with pytest.raises(ConfigError, match=r"^train\.metric=accuracy .*causal-lm.*loss, perplexity"):
        load_checked_config(path, ["train.metric=accuracy"])


def test_the_pipelines_config_is_checked_too(tmp_path):
    text = _config_file(tmp_path).read_text() + "promote:\n  metric: loss\n"
    with pytest.raises(ConfigError, match=r"^promote\.metric=loss .*macro_f1, accuracy"):
        load_stage_config(text)
