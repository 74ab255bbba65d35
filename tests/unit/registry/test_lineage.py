"""Lineage tags and parameter flattening: pure Python, no MLflow."""

from __future__ import annotations

import json
import os
import subprocess

from ftpipe.config import config_hash
from ftpipe.registry.lineage import (
    GIT_SHA_ENV,
    KFP_RUN_VAR,
    NONE,
    PACKAGES,
    PIPELINE_RUN_VAR,
    base_model_revision,
    git_state,
    lineage_tags,
    pipeline_run,
)
from ftpipe.registry.params import MAX_PARAM_CHARS, flatten, split_params
from ftpipe.stage import _pipeline_run
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
    monkeypatch.delenv(GIT_SHA_ENV, raising=False)
    tags = lineage_tags(make_config(train="unused.csv"))
    assert tags["ftpipe.git_commit"] == "unknown"
    assert tags["ftpipe.data_fingerprint"] == "unknown"  # prep has not run


def test_an_image_without_a_checkout_names_the_commit_it_was_built_from(
    make_config, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # as in an image: no .git anywhere above
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv(GIT_SHA_ENV, "0123456789abcdef0123456789abcdef01234567")
    tags = lineage_tags(make_config(train="unused.csv"))
    assert tags["ftpipe.git_commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert tags["ftpipe.git_dirty"] == "unknown"  # the variable cannot tell
    # An image built without the build argument sets the variable empty: still unknown.
    monkeypatch.setenv(GIT_SHA_ENV, "")
    assert git_state() == ("unknown", "unknown")


def test_a_checkout_wins_over_the_image_commit(monkeypatch):
    monkeypatch.setenv(GIT_SHA_ENV, "f" * 40)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    commit, dirty = git_state(REPO)
    assert commit == head.stdout.strip() != "f" * 40
    assert dirty in ("true", "false")


def test_a_stage_of_a_pipeline_run_is_tagged_with_it_and_leaves_the_environment_as_it_was(
    make_config, monkeypatch
):
    monkeypatch.delenv(PIPELINE_RUN_VAR, raising=False)
    monkeypatch.setenv(KFP_RUN_VAR, "3f2a")  # what a KFP cluster's pod is told
    config = make_config(train="unused.csv")
    assert pipeline_run() == "3f2a"

    with _pipeline_run("ftpipe-finetune-2026-01-02-03-04-05-000006"):  # the local runner's
        tags = lineage_tags(config, "f" * 64)
    assert tags["ftpipe.pipeline_run_id"] == "ftpipe-finetune-2026-01-02-03-04-05-000006"
    assert PIPELINE_RUN_VAR not in os.environ and pipeline_run() == "3f2a"

    monkeypatch.delenv(KFP_RUN_VAR)
    with _pipeline_run(NONE):  # a stage outside any pipeline run sets nothing
        assert PIPELINE_RUN_VAR not in os.environ
        assert lineage_tags(config, "f" * 64)["ftpipe.pipeline_run_id"] == NONE
