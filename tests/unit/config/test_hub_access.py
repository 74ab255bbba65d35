"""`model.offline`: the config, not the shell, decides whether a run may download from the Hub."""

from __future__ import annotations

import os

import datasets.config
import huggingface_hub
import pytest
import yaml
from huggingface_hub import constants
from transformers.utils.hub import is_offline_mode as transformers_offline

from ftpipe.errors import ConfigError
from ftpipe.hub import OFFLINE_ENV
from ftpipe.stage import load_stage_config


@pytest.fixture
def hub_state(monkeypatch):
    """Restores the process's Hub switches (the variable and the clients' copies) after a test."""
    monkeypatch.setenv(OFFLINE_ENV, "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", datasets.config.HF_HUB_OFFLINE)
    return monkeypatch


def stage_config(make_config, *overrides: str) -> str:
    """The YAML text a pipeline stage gets, for a config with `overrides`."""
    config = make_config(*overrides, train="unused.csv")
    return yaml.safe_dump(config.model_dump(mode="json"))


def test_the_hub_is_off_unless_the_config_says_otherwise(make_config):
    assert make_config(train="unused.csv").model.offline is True
    assert make_config("model.offline=false", train="unused.csv").model.offline is False
    with pytest.raises(ConfigError, match=r"model\.offline"):
        make_config("model.offline=sometimes", train="unused.csv")


def test_an_offline_config_forbids_downloads_in_this_process(make_config, hub_state, tmp_path):
    hub_state.setenv(OFFLINE_ENV, "0")  # the shell allowed them; the config wins
    hub_state.setattr(constants, "HF_HUB_OFFLINE", False)

    load_stage_config(stage_config(make_config))

    assert constants.is_offline_mode() and transformers_offline()
    assert datasets.config.HF_HUB_OFFLINE is True
    assert os.environ[OFFLINE_ENV] == "1"  # what Ray workers and child processes inherit
    # A model missing from the cache is refused at once, without a network round trip.
    with pytest.raises(huggingface_hub.errors.LocalEntryNotFoundError):
        huggingface_hub.hf_hub_download("ftpipe-test/none", "config.json", cache_dir=tmp_path)


def test_an_online_config_allows_downloads_even_where_the_shell_forbade_them(
    make_config, hub_state
):
    hub_state.setattr(constants, "HF_HUB_OFFLINE", True)

    load_stage_config(stage_config(make_config, "model.offline=false"))

    # "0", not unset: a worker image's own HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE loses to it.
    assert os.environ[OFFLINE_ENV] == "0"
    assert not constants.is_offline_mode() and not transformers_offline()
    assert datasets.config.HF_HUB_OFFLINE is False
