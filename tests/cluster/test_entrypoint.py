"""The RayJob's entrypoint, as infra/ ships it, run against a 3-node Ray cluster and S3.

The entrypoint is read from the rendered manifest and run the way the Ray head runs it: by the
shell, in a directory laid out like the image's working directory (configs/ and examples/), with
the variables it reads from the head's environment pointing at the test's S3 bucket and a tmp
MLflow. The only change is a few documented options and overrides appended to it, which make
the run small.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from ftpipe.config import load_config
from tests.cluster.services import RayCluster, S3Server
from tests.helpers import REPO
from tests.infra.rendering import INFRA, OVERLAYS, render

pytestmark = pytest.mark.integration

SMALL = ("--no-tune", "train.epochs=1")
"""Appended to the entrypoint, documented options and dotted overrides (the last one wins): no
sweep (`ftpipe tune` on this cluster is tests/cluster/test_multi_node.py's) and one epoch."""
STAGES = ("prep", "recommend", "train", "evaluate", "register", "promote")
PREFIX = "entrypoint"
"""The run storage under the test bucket: FTPIPE_RUN_STORAGE=s3://BUCKET/PREFIX."""


def entrypoint(objects: list[dict[str, Any]], kind: str) -> str:
    """The entrypoint of the one object of `kind` (a RayCronJob's is in its job template)."""
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    spec = found["spec"]
    return spec.get("jobTemplate", spec)["entrypoint"]


def head_env(objects: list[dict[str, Any]]) -> set[str]:
    """The environment variables set on the RayCluster's head container."""
    (cluster,) = [obj for obj in objects if obj["kind"] == "RayCluster"]
    container = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    return {env["name"] for env in container.get("env", [])}


@pytest.fixture(scope="module")
def rayjob_entrypoint() -> str:
    return entrypoint(render(INFRA / "jobs"), "RayJob")


@pytest.fixture(scope="module", autouse=True)
def artifact_cache(tmp_path_factory: pytest.TempPathFactory):
    """Downloaded artifacts under tmp: set before this module's cluster starts, so its nodes'
    Ray workers (which localize the prepared data from S3) inherit it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTPIPE_ARTIFACT_CACHE", str(tmp_path_factory.mktemp("artifact-cache")))
        yield


def head_like(tmp: Path, storage: str | None) -> dict[str, str]:
    """What the entrypoint's shell gets on the head: its working directory and environment."""
    for shipped in ("configs", "examples"):  # as the image's /home/ray/app holds them
        (tmp / shipped).symlink_to(REPO / shipped)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}  # fmt: skip
    env.pop("FTPIPE_RUN_STORAGE", None)
    return env | ({"FTPIPE_RUN_STORAGE": storage} if storage else {})


def test_the_cron_job_runs_the_same_entrypoint_and_the_head_sets_what_it_reads(
    rayjob_entrypoint,
):
    assert shlex.split(rayjob_entrypoint)[:3] == ["ftpipe", "run", "--no-kfp"]
    assert not re.search(r"&&|;|\|", rayjob_entrypoint)  # one command: overrides append to it
    needed = set(re.findall(r"\$\{?(\w+)", rayjob_entrypoint))
    assert needed == {"MLFLOW_TRACKING_URI", "FTPIPE_RUN_STORAGE"}
    for overlay in OVERLAYS:
        objects = render(INFRA / "overlays" / overlay)
        assert entrypoint(objects, "RayCronJob") == rayjob_entrypoint, overlay
        assert needed <= head_env(objects), overlay


def test_without_the_storage_variable_the_job_stops_at_once_naming_it(rayjob_entrypoint, tmp_path):
    env = head_like(tmp_path, None)
    result = subprocess.run(["sh", "-c", rayjob_entrypoint], cwd=tmp_path, text=True,
                            capture_output=True, env=env, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert "FTPIPE_RUN_STORAGE: is not set on the Ray head" in result.stderr, result.stderr
    assert not (tmp_path / "outputs").exists()  # nothing ran


def test_the_rayjob_entrypoint_runs_every_stage_on_the_cluster(
    rayjob_entrypoint, tmp_path, s3: S3Server, cluster: RayCluster
):
    env = head_like(tmp_path, f"s3://{s3.bucket}/{PREFIX}") | cluster.driver_env
    command = f"{rayjob_entrypoint} {shlex.join(SMALL)}"
    result = subprocess.run(["sh", "-c", command], cwd=tmp_path, text=True,
                            capture_output=True, env=env, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    # One line as each stage starts and one as it finishes, in the pipeline's order.
    lines = re.findall(r"^(\[\d/6\] \w+ (?:started|finished))", result.stdout, re.MULTILINE)
    assert lines == [f"[{i}/6] {stage} {event}" for i, stage in enumerate(STAGES, 1)
                     for event in ("started", "finished")]  # fmt: skip

    # Registered and, as the model's first version, promoted: in the MLflow the head names.
    config = load_config(REPO / "configs" / "demo.yaml")
    (run,) = (tmp_path / config.pipeline.local_root).iterdir()
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    name = config.registry.model_name
    version = client.get_model_version(name, "1")
    assert version.tags["ftpipe.pipeline_run_id"] == run.name
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    # Trained from the prepared data in the run storage, where workers on every node read it,
    # with its checkpoints there too.
    storage = f"s3://{s3.bucket}/{PREFIX}"
    params = client.get_run(version.run_id).data.params
    assert params["data.output_dir"] == f"{storage}/{run.name}/prep", params
    keys = s3.keys(f"{PREFIX}/")
    assert f"{PREFIX}/{run.name}/prep/fingerprint.json" in keys
    result = json.loads((run / "train" / "result.json").read_text())
    assert result["best_checkpoint"].startswith(f"{storage}/train-")
    assert any(re.match(rf"{PREFIX}/train-[\w-]+/ftpipe-finished$", key) for key in keys), keys
