"""The whole DAG through the real KFP local runner, local Ray and MLflow on sqlite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ftpipe.config import load_config
from tests.helpers import ftpipe

pytestmark = pytest.mark.integration


def test_run_registers_with_lineage_and_promotes_on_the_gate_then_a_rerun_hits_the_cache(
    tiny_pipeline_config,
):
    config = load_config(tiny_pipeline_config)
    first = ftpipe("run", "-c", str(tiny_pipeline_config), timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-6000:]
    # Every stage ran and left its outputs (the runner raises on any failed stage).
    root = next(Path(config.pipeline.local_root).glob("ftpipe-finetune-*"))
    for task in ("identify", "prep", "recommend", "tune", "train", "evaluate", "register",
                 "promote"):  # fmt: skip
        assert (root / task).is_dir(), sorted(p.name for p in root.iterdir())

    client = MlflowClient(config.registry.tracking_uri)
    version = client.get_model_version("tiny", "1")
    lineage = ("config_hash", "data_fingerprint", "base_model", "git_commit", "version.torch",
               "version.transformers", "version.ftpipe")  # fmt: skip
    for tag in lineage:
        assert version.tags.get(f"ftpipe.{tag}"), sorted(version.tags)
    prepared = json.loads((root / "prep/prepared/fingerprint.json").read_text())
    assert version.tags["ftpipe.data_fingerprint"] == prepared["fingerprint"]
    # The pipeline run that registered it: locally, the run's name (its artifacts directory).
    assert version.tags["ftpipe.pipeline_run_id"] == root.name
    # The first version has no champion to beat: the gate promotes it, and the alias says so.
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"
    # It decided on the test split, which neither the sweep nor training selected on.
    assert (version.tags["ftpipe.gate.split"], version.tags["ftpipe.gate.optimistic"]) == (
        "test", "false",
    )  # fmt: skip
    assert "on the test split" in version.tags["ftpipe.gate.reason"]
    assert "version 1 (alias challenger): PROMOTED to champion" in first.stdout
    assert "mlflow ui --backend-store-uri" in first.stdout

    # Same config and data: every stage up to evaluation replays from the cache, and the same
    # export registers as the same version (registration is idempotent), still the champion.
    second = ftpipe("run", "-c", str(tiny_pipeline_config), timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-6000:]
    log = second.stdout + second.stderr
    for task in ("prep", "recommend", "tune", "train", "evaluate"):
        assert f"Task {task} cache hit" in log, log[-3000:]
    assert "version 1 (alias challenger): already champion" in second.stdout
    assert [str(v.version) for v in client.search_model_versions("name='tiny'")] == ["1"]
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"
