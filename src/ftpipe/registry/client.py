"""Connecting to MLflow: the tracking URI, retries on transient store errors, experiments.

Credentials never come from the config: MLflow reads MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) from the environment, and a tracking URI
that embeds a user or password is refused.

The library never leaves process-global MLflow state behind: every call goes through an
`MlflowClient` built with explicit URIs (`connect`), and the few calls MLflow offers only at
module level (logging a model, the fluent run and its system metrics, some artifact downloads)
run inside `scoped_mlflow`, which points MLflow's globals at the store for the call and restores
them, with the environment variables MLflow mirrors them into, on the way out.

SQLite allows one writer at a time. Several processes writing at once (Tune trials, parallel
promotions) can meet "database is locked" even with MLflow's busy timeout, and racing
`create_model_version` calls can exhaust MLflow's own three retries; two processes setting
the same alias or tag at once can both try to insert it. `retry` repeats those calls with
jittered exponential backoff; every other error surfaces at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking import _model_registry, _tracking_service, fluent

from ftpipe.config.schema import RegistryConfig
from ftpipe.environ import restored_environ
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

_MIRRORED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
"""Environment variables MLflow's setters write (for subprocesses to inherit)."""

_GLOBALS_LOCK = threading.RLock()
"""Serializes ftpipe's own `scoped_mlflow` blocks across threads (they swap process state)."""


def connect(registry: RegistryConfig) -> MlflowClient:
    """A client of the store at `registry.tracking_uri` (tracking and registry alike).

    Nothing is set process-wide: the URIs live in the client. Calls MLflow offers only at
    module level go through `scoped_mlflow`.

    Args:
        registry: The `registry` config section.

    Returns:
        A client whose tracking and registry URIs are both `registry.tracking_uri`.

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


@contextmanager
def scoped_mlflow(uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """Point MLflow's process-wide state at the store `uri` for the block, then restore it.

    For the calls MLflow has no client form of. The tracking and registry URIs (and, with
    `experiment_id`, the active experiment) are set on entry; on exit, error or not, each is
    put back as it was, an unset one as unset. The state is set directly rather than through
    `mlflow.set_tracking_uri`, which would also write MLFLOW_TRACKING_URI into the environment
    and reset the tracing provider with its user-set destination; the environment variables
    MLflow's setters write (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI, MLFLOW_EXPERIMENT_ID) are
    restored all the same, in case a call inside sets them. Blocks are serialized across
    threads; they nest.

    Args:
        uri: The tracking (and registry) URI.
        experiment_id: The experiment MLflow takes as active (what `mlflow.set_experiment`
            would set, without its lookups and side effects); None leaves it alone.

    Yields:
        Nothing; the block runs with MLflow pointed at `uri`.
    """
    tracking_state = _tracking_service.utils
    registry_state = _model_registry.utils
    with _GLOBALS_LOCK:
        tracking = tracking_state._tracking_uri
        registry = registry_state._registry_uri
        experiment = fluent._active_experiment_id
        try:
            # What mlflow.get_tracking_uri and get_registry_uri read before the environment.
            tracking_state._tracking_uri = uri
            registry_state._registry_uri = uri
            if experiment_id is not None:
                fluent._active_experiment_id = experiment_id
            with restored_environ(*_MIRRORED_ENV):
                yield
        finally:
            fluent._active_experiment_id = experiment
            registry_state._registry_uri = registry
            tracking_state._tracking_uri = tracking


def artifact_root(client: MlflowClient) -> str | None:
    """Where a new experiment of a sqlite store keeps its artifacts: `mlruns/` beside the file.

    MLflow's own default is `./mlruns` in the working directory, which for a store elsewhere
    (a test's, a pipeline's) scatters its artifacts into whatever directory the command ran
    in. None for other stores: a server decides its artifact root itself.
    """
    uri = client.tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if missing (safe when processes race to create)."""

    def get_or_create() -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_root(client))
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
