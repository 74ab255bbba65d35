"""Registry fixtures: one SQLite tracking store per session, tiny trained models, fake versions.

The store is initialised once (MLflow migrates a fresh database in about 5 s); tests keep
apart through unique registered-model names. Artifacts go to a temporary directory: the test
experiment is created with it before ftpipe opens it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

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


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    """Train two tiny models once: full fine-tuning, and LoRA merged on export.

    Returns a function from strategy ("full" or "lora") to (config, export directory).
    """
    from ftpipe.train.local import train_local
    from tests.helpers import train_config

    runs = {}
    for strategy, extra in (("full", ()), ("lora", ("strategy.merge_adapter=true",))):
        root = tmp_path_factory.mktemp(f"trained-{strategy}")
        config = train_config(root, tiny_model_dir, f"strategy.name={strategy}", *extra)
        runs[strategy] = (config, Path(train_local(config).model_dir))
    return runs.__getitem__
