"""The registry against a real `mlflow server` on 127.0.0.1 (artifacts proxied over HTTP)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from ftpipe.config import config_hash
from ftpipe.registry.client import scoped_mlflow
from ftpipe.registry.promote import promote
from ftpipe.registry.tracking import TrainingRun, log_evaluation
from ftpipe.registry.versions import register
from ftpipe.stages.evaluate import evaluate_model, load_heldout
from ftpipe.train.local import train_local
from ftpipe.train.predictor import Predictor
from tests.helpers import train_config

pytestmark = pytest.mark.integration

LONG_SAMPLER = "choice([" + ", ".join(f"{i}e-6" for i in range(1, 120)) + "])"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(backend_uri: str, root: Path) -> Iterator[str]:
    """`mlflow server` on a free 127.0.0.1 port over `backend_uri`; yields its URL.

    New artifacts go under `root/artifacts` (served over HTTP), its log to `root/server.log`.
    """
    port = _free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", backend_uri,
         "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server not healthy: {(root / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on a free local port, SQLite behind it; stopped after the module."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root) as uri:
        yield uri


@pytest.mark.slow
def test_track_evaluate_register_load_and_promote_through_a_server(
    server, tmp_path, tiny_model_dir
):
    config = train_config(
        tmp_path, tiny_model_dir, "strategy.name=lora", "strategy.merge_adapter=false",
        f"registry.tracking_uri={server}", "registry.model_name=server-test",
        "registry.log_system_metrics=false", f"tune.search_space={{train.lr: '{LONG_SAMPLER}'}}",
        "evaluate.latency_rows=4", "promote.bootstrap_samples=500",
    )  # fmt: skip
    with TrainingRun(config, tune_trial_id="trial_7") as run:
        outcome = train_local(config)
        run.log_metrics(outcome.metrics, outcome.metrics["step"])
    model_dir = Path(outcome.model_dir)
    predictor = Predictor.load(model_dir)
    evaluation = evaluate_model(
        predictor,
        load_heldout(config.data.output_dir),
        tmp_path / "eval",
        str(model_dir),
        latency_rows=4,
    )
    evaluation.run_id = log_evaluation(evaluation, config, run.run_id)
    version = register(config, model_dir, run_id=run.run_id, evaluation=evaluation)

    client = MlflowClient(server)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    fingerprint = json.loads((tmp_path / "prep" / "fingerprint.json").read_text())["fingerprint"]
    tags = client.get_model_version("server-test", str(version.version)).tags
    for source in (logged.data.tags, tags):  # on the run and on the version
        assert source["ftpipe.config_hash"] == config_hash(config)
        assert source["ftpipe.data_fingerprint"] == fingerprint
        assert source["ftpipe.tune_trial_id"] == "trial_7"
        assert source["ftpipe.base_model"] == str(tiny_model_dir)
        assert source["ftpipe.version.peft"] and source["ftpipe.git_commit"]
    # An over-long value did not fail the run: it is an artifact, fetched over HTTP.
    pointer = logged.data.params["tune.search_space.train.lr"]
    assert "artifact params/tune.search_space.train.lr.json" in pointer
    artifact = client.download_artifacts(run.run_id, "params/tune.search_space.train.lr.json")
    assert json.loads(Path(artifact).read_text())["value"] == LONG_SAMPLER
    assert logged.data.metrics["eval/accuracy"] == pytest.approx(evaluation.metrics["accuracy"])

    texts = ["good hello help please", "bad late crash twice", "refund please"]
    with scoped_mlflow(server):  # MLflow loads models through its global URIs only
        served = mlflow.pyfunc.load_model("models:/server-test@challenger").predict(
            pd.DataFrame({"text": texts})
        )
    assert (
        served["label"].tolist()
        == predictor.frame(predictor.probabilities(texts))["label"].tolist()
    )

    result = promote(config)
    assert result.changed and result.decision.champion is None
    champion = client.get_model_version_by_alias("server-test", "champion")
    assert str(champion.version) == str(version.version)
    assert champion.tags["ftpipe.gate.decision"] == "promoted"
