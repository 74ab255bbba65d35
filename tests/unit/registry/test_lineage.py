"""Lineage tags and parameter flattening: pure Python, no MLflow."""

from __future__ import annotations

import json
import subprocess

from ftpipe.config import config_hash
from ftpipe.registry.lineage import NONE, PACKAGES, base_model_revision, lineage_tags
from ftpipe.registry.params import MAX_PARAM_CHARS, flatten, split_params
from tests.helpers import REPO


def test_flatten_gives_dotted_keys_and_keeps_lists_whole():
    flat = flatten({"data": {"train": "a.csv", "labels": ["x", "y"]}, "seed": 1, "tune": {}})
    assert flat == {"data.train": "a.csv", "data.labels": ["x", "y"], "seed": 1, "tune": {}}


def test_values_over_the_limit_become_artifacts_named_by_the_parameter():
    id2label = {str(i): f"a rather long class name number {i}" for i in range(100)}
    short, long = split_params({"seed": 42, "labels.id2label": id2label, "data.labels": None})
    assert short["seed"] == "42" and short["data.labels"] == "null"
    assert "artifact params/labels.id2label.json" in short["labels.id2label"]
    assert len(short["labels.id2label"]) <= MAX_PARAM_CHARS
    assert json.loads(long["params/labels.id2label.json"])["value"] == id2label


def test_lineage_tags_name_config_data_model_code_and_libraries(make_config, monkeypatch):
    monkeypatch.setenv("KFP_RUN_ID", "kfp-run-7")
    monkeypatch.delenv("FTPIPE_PIPELINE_RUN_ID", raising=False)
    monkeypatch.delenv("FTPIPE_TUNE_TRIAL_ID", raising=False)
    config = make_config(train="unused.csv")
    monkeypatch.chdir(REPO)

    tags = lineage_tags(config, data_fingerprint="f" * 64)

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert tags["ftpipe.config_hash"] == config_hash(config)
    assert tags["ftpipe.data_fingerprint"] == "f" * 64
    assert tags["ftpipe.base_model"] == config.model.name
    assert tags["ftpipe.base_model_revision"].startswith("sha256:")  # a local directory
    assert tags["ftpipe.git_commit"] == head.strip()
    assert tags["ftpipe.git_dirty"] in ("true", "false")
    assert tags["ftpipe.pipeline_run_id"] == "kfp-run-7"
    assert tags["ftpipe.tune_trial_id"] == NONE
    assert {f"ftpipe.version.{p}" for p in PACKAGES} <= set(tags)
    assert tags["ftpipe.version.ftpipe"] != "not installed"
    explicit = lineage_tags(config, "f" * 64, pipeline_run_id="p", tune_trial_id="t1")
    assert (explicit["ftpipe.pipeline_run_id"], explicit["ftpipe.tune_trial_id"]) == ("p", "t1")


def test_base_model_revision_prefers_the_pin_and_hashes_local_weights(make_config, tmp_path):
    pinned = make_config("model.revision=abc123", train="unused.csv")
    assert base_model_revision(pinned.model) == "abc123"
    local = make_config(train="unused.csv")
    first = base_model_revision(local.model)
    assert first == base_model_revision(local.model)
    assert len(first) == len("sha256:") + 64


def test_outside_a_git_repository_the_commit_is_unknown(make_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    tags = lineage_tags(make_config(train="unused.csv"))
    assert tags["ftpipe.git_commit"] == "unknown"
    assert tags["ftpipe.data_fingerprint"] == "unknown"  # prep has not run
