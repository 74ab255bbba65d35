"""The registry leaves MLflow's process-global state as the caller had it (issue 23).

The caller points MLflow at its own store A; ftpipe then tracks, registers, promotes and
downloads against another store B. Afterwards the caller's tracking and registry URIs, its
active experiment and the MLFLOW_* variables are what they were, also when a call fails, and
nothing reached store A.
"""

from __future__ import annotations

import os
import time

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from ftpipe.config import RegistryConfig
from ftpipe.errors import FtpipeError
from ftpipe.registry.client import connect, scoped_mlflow
from ftpipe.registry.evidence import evaluation_tags
from ftpipe.registry.promote import promote
from ftpipe.registry.tracking import TrainingRun, log_evaluation
from ftpipe.registry.versions import add_version, register
from ftpipe.stages.predict import resolve_model
from tests.unit.registry.helpers import (
    EXPERIMENT,
    corrupt,
    synthetic_predictions,
    with_registry,
    write_evaluation,
)

NAMES = ("bad", "good")
LABELS = np.random.default_rng(0).integers(0, 2, 200)


@pytest.fixture(scope="module")
def store_a(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The caller's own store: a fresh SQLite file, opened once through ftpipe."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('caller') / 'a.db'}"
    connect(RegistryConfig(tracking_uri=uri))
    return uri


@pytest.fixture
def caller(store_a: str, tmp_path, monkeypatch) -> dict[str, str | None]:
    """The caller's MLflow state: its store A, a distinctive registry URI, no experiment set."""
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(store_a)
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'caller-registry.db'}")
    return snapshot()


def snapshot() -> dict[str, str | None]:
    """What a caller can observe of MLflow's global state."""
    from mlflow.tracking import fluent

    return {
        "tracking": mlflow.get_tracking_uri(),
        "registry": mlflow.get_registry_uri(),
        "experiment": fluent._active_experiment_id,
        **{k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")},
    }


def untouched(uri: str) -> bool:
    """Whether store `uri` holds no run and no registered model."""
    client = MlflowClient(uri, uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return not client.search_runs(experiments) and not client.search_registered_models()


def synthetic_version(config, tmp_path, accuracy: float, seed: int) -> str:
    """Log a synthetic evaluation to store B and register a version of it."""
    frame = synthetic_predictions(LABELS, corrupt(LABELS, accuracy, 2, seed), NAMES)
    evaluation = write_evaluation(tmp_path / f"eval-{time.monotonic_ns()}", frame, "c" * 64)
    evaluation.run_id = log_evaluation(evaluation, config)
    client = connect(config.registry)
    version = add_version(
        client, config.registry.model_name, f"runs:/{evaluation.run_id}/model",
        evaluation.run_id, evaluation_tags(evaluation),
    )  # fmt: skip
    return str(version.version)


def test_tracking_and_promoting_in_b_leaves_the_callers_state_and_store_a_alone(
    caller, store_a, make_config, tracking_uri, model_name, tmp_path
):
    config = with_registry(make_config(train="unused.csv"), tracking_uri, model_name)
    assert config.registry.tracking_uri != store_a

    with TrainingRun(config, record_dir=tmp_path) as run:
        assert snapshot() == caller  # not even while the run is open
        run.log_metrics({"accuracy": 0.5, "step": 1})
    assert snapshot() == caller
    v1 = synthetic_version(config, tmp_path, 0.7, seed=1)
    assert promote(config, v1).changed  # downloads the predictions from B
    assert snapshot() == caller

    b = MlflowClient(tracking_uri, tracking_uri)
    assert b.get_run(run.run_id).info.status == "FINISHED"
    assert str(b.get_model_version_by_alias(model_name, "champion").version) == v1
    assert untouched(store_a)


def test_registering_and_downloading_from_b_leaves_the_callers_state_alone(
    caller, store_a, trained, tracking_uri, model_name, tmp_path
):
    config, model_dir = trained("full")
    config = with_registry(config, tracking_uri, model_name)

    version = register(config, model_dir)  # logs the model through MLflow's fluent API
    assert snapshot() == caller
    downloaded = resolve_model(f"models:/{model_name}/{version.version}", tracking_uri)
    assert (downloaded / "ftpipe.json").is_file()
    assert snapshot() == caller

    b = MlflowClient(tracking_uri, tracking_uri)
    logged = b.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.experiment_id == b.get_run(version.run_id).info.experiment_id
    assert untouched(store_a)


def test_a_failing_call_restores_the_callers_state_too(
    caller, make_config, tracking_uri, model_name, tmp_path
):
    config = with_registry(make_config(train="unused.csv"), tracking_uri, model_name)

    with pytest.raises(RuntimeError, match="worker died"), TrainingRun(config, record_dir=tmp_path):
        raise RuntimeError("worker died")
    assert snapshot() == caller
    with pytest.raises(FtpipeError, match="does not name a registered model version"):
        resolve_model(f"models:/{model_name}-missing/1", tracking_uri)
    assert snapshot() == caller
    with pytest.raises(KeyError), scoped_mlflow(tracking_uri, experiment_id="42"):
        assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == tracking_uri
        mlflow.set_experiment(EXPERIMENT)  # a setter inside: it writes MLFLOW_EXPERIMENT_ID
        raise KeyError("inside")
    assert snapshot() == caller


def test_unset_stays_unset_and_the_environment_keeps_its_values(tracking_uri, monkeypatch):
    from mlflow.tracking import _model_registry, _tracking_service, fluent

    mlflow.set_tracking_uri(None)  # private state unset; the fixture puts it back after
    monkeypatch.setattr(_model_registry.utils, "_registry_uri", None)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-the-environment.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)

    with scoped_mlflow(tracking_uri, experiment_id="7"):
        assert mlflow.get_tracking_uri() == tracking_uri
    assert _tracking_service.utils._tracking_uri is None
    assert _model_registry.utils._registry_uri is None
    assert fluent._active_experiment_id is None
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///from-the-environment.db"
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert "MLFLOW_EXPERIMENT_ID" not in os.environ
