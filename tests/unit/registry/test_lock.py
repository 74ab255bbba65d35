"""The promotion lock against a real SQLite store, held by real processes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from ftpipe.registry import lock as lock_module
from ftpipe.registry.lock import promotion_lock
from tests.helpers import REPO

HOLDER = r"""
import sys, time
from pathlib import Path
from mlflow import MlflowClient
from ftpipe.registry.lock import promotion_lock

uri, name, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with promotion_lock(MlflowClient(uri), name, timeout_s=600):
    ready.write_text("held")
    time.sleep(600)
"""


def hold_lock(tracking_uri: str, name: str, tmp_path: Path) -> subprocess.Popen:
    """A process that takes the lock, says so in a file, then sleeps holding it."""
    ready = tmp_path / "ready"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, tracking_uri, name, str(ready)], cwd=REPO, env=env
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert holder.poll() is None, "the holder died before taking the lock"
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.05)
    return holder


def test_a_lock_of_a_killed_process_is_broken_at_once_and_its_holder_named(
    tracking_uri, model_name, tmp_path, caplog
):
    holder = hold_lock(tracking_uri, model_name, tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    client = MlflowClient(tracking_uri)
    lock = f"{model_name}.promotion-lock"
    owner = f"{socket.gethostname()}:{holder.pid}"
    assert client.get_registered_model(lock).tags["ftpipe.lock.owner"] == owner

    caplog.set_level(logging.INFO, logger="ftpipe.registry.lock")
    started = time.monotonic()
    with promotion_lock(client, model_name, timeout_s=60):
        waited = time.monotonic() - started
        mine = f"{socket.gethostname()}:{os.getpid()}"
        assert client.get_registered_model(lock).tags["ftpipe.lock.owner"] == mine
    assert waited < 15, f"waited {waited:.0f}s for the lock of a dead process"
    text = caplog.text
    assert f"pid {holder.pid}" in text and socket.gethostname() in text
    assert "is gone" in text
    assert client.search_registered_models(f"name LIKE '{lock}%'") == []


def test_a_live_holder_is_named_then_a_countdown_runs_to_the_timeout(
    tracking_uri, model_name, tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(lock_module, "COUNTDOWN_EVERY_S", 1.0, raising=False)
    holder = hold_lock(tracking_uri, model_name, tmp_path)
    try:
        caplog.set_level(logging.INFO, logger="ftpipe.registry.lock")
        started = time.monotonic()
        with promotion_lock(MlflowClient(tracking_uri), model_name, timeout_s=3):
            waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # The live holder is waited for until its lock is older than the timeout, then broken.
    assert 1.5 < waited < 30
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"pid {holder.pid}" in m and "since" in m for m in warnings), warnings
    countdown = [r.getMessage() for r in caplog.records if "s left" in r.getMessage()]
    assert len(countdown) >= 1, caplog.text
