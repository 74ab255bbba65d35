"""A run whose process was killed is ended by the next run of the same config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from ftpipe.registry.tracking import TrainingRun
from tests.helpers import REPO
from tests.unit.registry.helpers import with_registry

TRAINER = r"""
import json, sys, time
from pathlib import Path
from ftpipe.config.load import validate_config
from ftpipe.registry.tracking import TrainingRun

config, ready = validate_config(json.loads(sys.argv[1])), Path(sys.argv[2])
with TrainingRun(config, record_dir=ready.parent) as run:
    ready.write_text(run.run_id)
    time.sleep(600)  # training
"""


def start_training(config, directory: Path) -> tuple[subprocess.Popen, str]:
    """A process that opens a TrainingRun, writes its run id to a file, then trains (sleeps)."""
    directory.mkdir()
    ready = directory / "run_id"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    raw = json.dumps(config.model_dump(mode="json"))
    process = subprocess.Popen([sys.executable, "-c", TRAINER, raw, str(ready)], cwd=REPO, env=env)
    deadline = time.monotonic() + 120
    while not ready.exists() or not ready.read_text():
        assert process.poll() is None, "the training process died before starting its run"
        assert time.monotonic() < deadline, "the training process never started its run"
        time.sleep(0.05)
    return process, ready.read_text()


def test_the_next_run_of_a_config_ends_the_run_of_a_killed_process(
    make_config, tracking_uri, model_name, tmp_path
):
    config = with_registry(make_config(train="unused.csv"), tracking_uri, model_name)
    killed, killed_run = start_training(config, tmp_path / "killed")
    alive, alive_run = start_training(config, tmp_path / "alive")
    try:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        client = MlflowClient(tracking_uri)
        assert client.get_run(killed_run).info.status == "RUNNING"  # nobody could end it

        with TrainingRun(config, record_dir=tmp_path / "next") as run:
            pass

        ended = client.get_run(killed_run)
        assert ended.info.status == "KILLED"
        assert ended.info.end_time is not None
        assert ended.data.tags["ftpipe.stop_reason"] == "process_gone"
        assert ended.data.tags["ftpipe.pid"] == str(killed.pid)
        # A run whose process still trains is left alone.
        assert client.get_run(alive_run).info.status == "RUNNING"
        assert client.get_run(run.run_id).info.status == "FINISHED"
    finally:
        alive.kill()
        alive.wait(timeout=30)
