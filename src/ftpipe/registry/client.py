"""Connecting to MLflow: the tracking URI, retries on transient store errors, experiments.

Credentials never come from the config: MLflow reads MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) from the environment, and a tracking URI
that embeds a user or password is refused.

SQLite allows one writer at a time. Several processes writing at once (Tune trials, parallel
promotions) can meet "database is locked" even with MLflow's busy timeout, and racing
`create_model_version` calls can exhaust MLflow's own three retries; two processes setting
the same alias or tag at once can both try to insert it. `retry` repeats those calls with
jittered exponential backoff; every other error surfaces at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ftpipe.config.schema import RegistryConfig
from ftpipe.errors import ConfigError, FtpipeError, reason

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "Model Version creation error",
    "deadlock",
    "could not serialize access",
)
_TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE",)
_DUPLICATE = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")
_UPSERTED = ("alias", "_tags")
"""Aliases and tags are upserts: two writers can both insert; the loser's retry updates."""


def connect(registry: RegistryConfig) -> MlflowClient:
    """Point this process's MLflow at `registry.tracking_uri` and return a client.

    The URI is set process-wide too, because model logging and artifact downloads go through
    MLflow's module-level API.

    Raises:
        ConfigError: If the URI embeds credentials.
        FtpipeError: If the tracking store cannot be reached.
    """
    uri = registry.tracking_uri
    parts = urlsplit(uri)
    if parts.username or parts.password:
        raise ConfigError(
            f"registry.tracking_uri embeds credentials ({parts.scheme}://USER:...@"
            f"{parts.hostname}). Remove them from the config and set MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment instead."
        )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        # Touch the store once, so a wrong URI fails here with the key to fix; a fresh SQLite
        # file is created and migrated by this call (several processes may race to do it).
        retry(lambda: client.search_experiments(max_results=1), "open the tracking store")
    except MlflowException as exc:
        raise FtpipeError(
            f"Cannot reach the MLflow tracking store at registry.tracking_uri={uri}: "
            f"{reason(exc)}. Start the server or fix the URI; credentials come from "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN."
        ) from None
    return client


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if missing (safe when processes race to create)."""

    def get_or_create() -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return client.get_experiment_by_name(name).experiment_id

    return retry(get_or_create, f"open experiment {name!r}")


def is_transient(exc: BaseException) -> bool:
    """Whether an MLflow or database error is worth retrying."""
    text = str(exc)
    code = getattr(exc, "error_code", "")
    if code in _TRANSIENT_CODES or any(marker in text for marker in _TRANSIENT):
        return True
    return any(m in text for m in _DUPLICATE) and any(m in text for m in _UPSERTED)


def retry(call: Callable[[], T], what: str, attempts: int = 12) -> T:
    """Run `call`, retrying transient store errors with jittered exponential backoff."""
    delay = 0.05
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient(exc):
                raise
            log.debug("Retrying %s after a transient error: %s", what, reason(exc))
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")
