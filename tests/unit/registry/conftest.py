"""Registry fixtures: one SQLite tracking store per session and unique model names.

The store is initialised once (MLflow migrates a fresh database in about 5 s); tests keep
apart through unique registered-model names. Artifacts go to a temporary directory: the test
experiment is created with it before ftpipe opens it.
"""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage pings from tests

from tests.unit.registry.helpers import EXPERIMENT


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite store holding the test experiment, artifacts in a temp directory."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=str(root / "artifacts"))
    return uri


@pytest.fixture
def model_name() -> str:
    """A registered-model name no other test uses."""
    return f"test-{uuid.uuid4().hex[:8]}"
