"""Fetching a registered model's export directory back from the registry.

Downloads are cached per logged model (a version's source never changes) under the system's
temporary directory, written to a unique partial directory and renamed into place, so
concurrent downloads of one model never see each other's half-written files.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from ftpipe.config.schema import RegistryConfig
from ftpipe.errors import FtpipeError, reason
from ftpipe.registry.client import connect, scoped_mlflow
from ftpipe.registry.pyfunc import EXPORT_ARTIFACT
from ftpipe.registry.versions import resolve_version


def download_export(ref: str, tracking_uri: str | None = None) -> Path:
    """Download the export directory behind a registry URI; cached per logged model.

    Args:
        ref: A registry URI: models:/NAME/VERSION, models:/NAME@ALIAS, models:/m-..., runs:/...
        tracking_uri: The store; `RegistryConfig`'s default when None.

    Returns:
        The export directory, in the local cache.

    Raises:
        FtpipeError: If the URI names nothing, or no ftpipe export.
    """
    import yaml

    registry = (
        RegistryConfig() if tracking_uri is None else RegistryConfig(tracking_uri=tracking_uri)
    )
    client = connect(registry)
    version = resolve_version(client, ref)
    source = version.source if version is not None else ref
    # A version's source is the logged model (models:/m-...), which never changes: cache on it.
    cache = Path(tempfile.gettempdir()) / "ftpipe-models" / re.sub(r"[^\w.-]", "_", source)
    if not (cache / "MLmodel").is_file():
        _download(source, cache, registry.tracking_uri, ref)
    flavor = yaml.safe_load((cache / "MLmodel").read_text())["flavors"].get("python_function", {})
    relative = flavor.get("artifacts", {}).get(EXPORT_ARTIFACT, {}).get("path")
    if relative is None or not (cache / relative).is_dir():
        raise FtpipeError(
            f"{ref} is not a model logged by ftpipe (its MLmodel has no `{EXPORT_ARTIFACT}` "
            "artifact). Register models with `ftpipe register`."
        )
    return cache / relative


def _download(source: str, cache: Path, uri: str, ref: str) -> None:
    """Download `source` from the store `uri` into `cache`, atomically.

    Raises:
        FtpipeError: If MLflow cannot download it (`ref` names it in the message).
    """
    partial = cache.with_name(f"{cache.name}.{uuid.uuid4().hex}.partial")
    try:
        with scoped_mlflow(uri):  # some artifact repositories read the global URIs
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(partial), tracking_uri=uri, registry_uri=uri
            )
    except MlflowException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise FtpipeError(f"Cannot download {ref}: {reason(exc)}.") from None
    try:
        partial.rename(cache)  # atomic; a concurrent download of the same model may win
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
