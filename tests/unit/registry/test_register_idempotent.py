"""Registration is idempotent per export, and finishes what a killed registration left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ftpipe.registry.versions import register
from tests.helpers import REPO
from tests.unit.registry.helpers import EXPERIMENT, with_registry

ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}

CREATE_ONLY = r"""
import json, sys, time
from pathlib import Path
from ftpipe.config.load import validate_config
from ftpipe.registry.client import connect
from ftpipe.registry.model_log import export_sha256
from ftpipe.registry.versions import create_version

config, model_dir, ready = validate_config(json.loads(sys.argv[1])), sys.argv[2], Path(sys.argv[3])
version = create_version(connect(config.registry), config, model_dir, export_sha256(model_dir))
ready.write_text(str(version.version))  # the version exists; its alias is not set yet
time.sleep(600)
"""

REGISTER = r"""
import json, sys
from ftpipe.config.load import validate_config
from ftpipe.registry.versions import register

register(validate_config(json.loads(sys.argv[1])), sys.argv[2])
"""


def spawn(script: str, config, *args: str) -> subprocess.Popen:
    raw = json.dumps(config.model_dump(mode="json"))
    return subprocess.Popen([sys.executable, "-c", script, raw, *args], cwd=REPO, env=ENV)


def versions_of(client: MlflowClient, name: str) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def test_the_same_export_registered_twice_gives_the_same_version(
    trained, tracking_uri, model_name, tmp_path
):
    config, model_dir = trained("full")
    config = with_registry(config, tracking_uri, model_name)

    first = register(config, model_dir)
    again = register(config, model_dir)
    # Keyed by content, not by path: a copy of the export is the same export.
    copy = shutil.copytree(model_dir, tmp_path / "copy")
    from_copy = register(config, copy)

    assert str(first.version) == str(again.version) == str(from_copy.version) == "1"
    client = MlflowClient(tracking_uri)
    assert versions_of(client, model_name) == ["1"]
    assert str(client.get_model_version_by_alias(model_name, "challenger").version) == "1"
    tags = client.get_model_version(model_name, "1").tags
    assert len(tags["ftpipe.export_sha256"]) == 64


def test_a_registration_killed_before_its_alias_is_finished_by_the_next(
    trained, tracking_uri, model_name, tmp_path
):
    from ftpipe.registry.versions import register_export

    config, model_dir = trained("full")
    config = with_registry(config, tracking_uri, model_name)
    ready = tmp_path / "ready"
    killed = spawn(CREATE_ONLY, config, str(model_dir), str(ready))
    deadline = time.monotonic() + 180
    while not ready.exists() or not ready.read_text():
        assert killed.poll() is None, "the registration died before creating its version"
        assert time.monotonic() < deadline, "the registration never created its version"
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    client = MlflowClient(tracking_uri)
    number = ready.read_text()
    with pytest.raises(MlflowException):  # half done: a version without its alias
        client.get_model_version_by_alias(model_name, "challenger")

    done = register_export(config, model_dir)

    assert str(done.version.version) == number and done.reused
    assert versions_of(client, model_name) == [number]
    assert str(client.get_model_version_by_alias(model_name, "challenger").version) == number
    assert client.get_model_version(model_name, number).tags["ftpipe.registration"] == "complete"


def test_a_registration_killed_while_logging_leaves_no_pending_model(
    trained, tracking_uri, model_name, tmp_path
):
    from ftpipe.registry.model_log import export_sha256
    from ftpipe.registry.versions import register_export

    config, model_dir = trained("full")
    config = with_registry(config, tracking_uri, model_name)
    # A big file keeps the logged model PENDING long enough to be killed while uploading.
    export = shutil.copytree(model_dir, tmp_path / "export")
    (export / "padding.bin").write_bytes(os.urandom(96 << 20))
    digest = export_sha256(export)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    query = f"tags.`ftpipe.export_sha256` = '{digest}'"

    killed = spawn(REGISTER, config, str(export))
    deadline = time.monotonic() + 180
    while not (models := client.search_logged_models([experiment], query)):
        assert killed.poll() is None, "the registration ended before logging its model"
        assert time.monotonic() < deadline, "the registration never started logging"
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    left = client.get_logged_model(models[0].model_id)
    assert str(left.status.value) == "PENDING", "the kill came after the upload: too late"

    done = register_export(config, export)

    assert str(client.get_logged_model(left.model_id).status.value) == "FAILED"
    assert any(left.model_id in line for line in done.orphans), done.orphans
    statuses = [str(m.status.value) for m in client.search_logged_models([experiment], query)]
    assert sorted(statuses) == ["FAILED", "READY"]
    assert versions_of(client, model_name) == [str(done.version.version)]
    assert str(client.get_model_version_by_alias(model_name, "challenger").version) == str(
        done.version.version
    )
