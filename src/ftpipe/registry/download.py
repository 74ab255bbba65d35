"""Fetching a registered model's export directory back from the registry.

Downloads are cached per logged model (a version's source never changes) in a per-user cache,
`$XDG_CACHE_HOME/ftpipe/models` (else `~/.cache/ftpipe/models`), created with mode 0700. Each
download is written to a unique partial directory and renamed into place, so concurrent
downloads of one model never see each other's half-written files.

A cached model is code (its pyfunc module) and weights, so the cache is not trusted:

* a cache directory or entry owned by another user, or writable by group or others, is refused
  with an error that names it and the fix (it is never repaired silently: someone else could
  have written to it);
* every use verifies the entry against the manifest logged with the model (the sha256 of each
  file, `ftpipe.registry.model_log.MANIFEST`), and the manifest against its digest tagged on
  the logged model in the store. An entry that does not match (tampered, or half-deleted) is
  downloaded again. A model logged without a manifest (by an older ftpipe, or a runs:/ URI)
  cannot be verified and is downloaded again at every use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import uuid
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ftpipe.config.schema import RegistryConfig
from ftpipe.errors import FtpipeError, reason
from ftpipe.registry.client import connect, scoped_mlflow
from ftpipe.registry.model_log import MANIFEST, MANIFEST_TAG, file_digests
from ftpipe.registry.pyfunc import EXPORT_ARTIFACT
from ftpipe.registry.versions import resolve_version

log = logging.getLogger(__name__)

_ADDED_ON_REGISTRATION = ("registered_model_meta",)
"""Files MLflow writes into a logged model when a version of it is registered: after the
manifest, so outside it (a name and a version number, nothing that runs)."""


def download_export(ref: str, tracking_uri: str | None = None) -> Path:
    """Download the export directory behind a registry URI; cached per logged model.

    Args:
        ref: A registry URI: models:/NAME/VERSION, models:/NAME@ALIAS, models:/m-..., runs:/...
        tracking_uri: The store; `RegistryConfig`'s default when None.

    Returns:
        The export directory, in the local cache, verified against the model's manifest.

    Raises:
        FtpipeError: If the URI names nothing, or no ftpipe export; if the cache is not
            private to this user; or if the download does not match its manifest.
    """
    import yaml

    registry = (
        RegistryConfig() if tracking_uri is None else RegistryConfig(tracking_uri=tracking_uri)
    )
    client = connect(registry)
    version = resolve_version(client, ref)
    source = version.source if version is not None else ref
    # A version's source is the logged model (models:/m-...), which never changes: cache on it.
    cache = cache_root() / re.sub(r"[^\w.-]", "_", source)
    expected = _manifest_digest(client, source)
    if cache.exists():
        _check_private(cache, entry=True)
        if expected is None or not _verified(cache, expected):
            if expected is not None:
                log.warning("The cached model %s does not match its manifest: downloading "
                            "it again", cache)  # fmt: skip
            _discard(cache)
    if not cache.exists():
        _download(source, cache, registry.tracking_uri, ref)
        if expected is not None and not _verified(cache, expected):
            _discard(cache)
            raise FtpipeError(
                f"The download of {ref} does not match the manifest logged with it: the "
                "registry's copy of the model was altered. Register the model again."
            )
    flavor = yaml.safe_load((cache / "MLmodel").read_text())["flavors"].get("python_function", {})
    relative = flavor.get("artifacts", {}).get(EXPORT_ARTIFACT, {}).get("path")
    if relative is None or not (cache / relative).is_dir():
        raise FtpipeError(
            f"{ref} is not a model logged by ftpipe (its MLmodel has no `{EXPORT_ARTIFACT}` "
            "artifact). Register models with `ftpipe register`."
        )
    return cache / relative


def cache_root() -> Path:
    """This user's model cache, created private (0700) if missing.

    Raises:
        FtpipeError: If it, or the `ftpipe` directory above it, is another user's or is
            writable by group or others.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    base_dir = Path(base) if os.path.isabs(base) else Path.home() / ".cache"  # XDG: absolute only
    root = base_dir / "ftpipe"
    for directory in (root, root / "models"):
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        _check_private(directory, entry=False)
    return root / "models"


def _check_private(path: Path, entry: bool) -> None:
    """Refuse a cache path (with everything under it, for an entry) not private to this user."""
    paths = [path, *path.rglob("*")] if entry else [path]
    for item in paths:
        info = item.lstat()
        problem = None
        if info.st_uid != os.getuid():
            problem = f"owned by uid {info.st_uid}, not by you (uid {os.getuid()})"
        elif not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o022:
            problem = f"writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
        if problem is None:
            continue
        fix = f"rm -rf {path}" if entry else f"chmod 700 {path}"
        raise FtpipeError(
            f"Refusing the model cache {item}: it is {problem}, so someone else could have "
            f"changed the models in it. Fix: `{fix}` (ftpipe downloads the models again), or "
            "point XDG_CACHE_HOME at a directory of your own."
        )


def _manifest_digest(client: MlflowClient, source: str) -> str | None:
    """The manifest digest tagged on the logged model `source` names, if it has one."""
    if not source.startswith("models:/m-"):
        return None
    try:
        model = client.get_logged_model(source.removeprefix("models:/"))
    except MlflowException:
        return None
    return model.tags.get(MANIFEST_TAG)


def _verified(cache: Path, expected: str) -> bool:
    """Whether `cache` holds exactly its manifest's files, and the manifest is the store's.

    The manifest's sha256 must be `expected` (the logged model's tag), and every other file
    must be listed in it with its digest; no file may be missing or added (but the ones MLflow
    adds on registration).
    """
    manifest = cache / MANIFEST
    if not manifest.is_file() or any(p.is_symlink() for p in cache.rglob("*")):
        return False
    text = manifest.read_bytes()
    if hashlib.sha256(text).hexdigest() != expected:
        return False
    return json.loads(text)["files"] == file_digests(cache, (MANIFEST, *_ADDED_ON_REGISTRATION))


def _discard(cache: Path) -> None:
    """Move an entry aside (atomic, so no reader sees it half-deleted), then delete it."""
    grave = cache.with_name(f"{cache.name}.{uuid.uuid4().hex}.discarded")
    try:
        cache.rename(grave)
    except OSError:
        return  # already gone
    shutil.rmtree(grave, ignore_errors=True)


def _download(source: str, cache: Path, uri: str, ref: str) -> None:
    """Download `source` from the store `uri` into `cache`, atomically, private to this user.

    Raises:
        FtpipeError: If MLflow cannot download it (`ref` names it in the message).
    """
    partial = cache.with_name(f"{cache.name}.{uuid.uuid4().hex}.partial")
    partial.mkdir(mode=0o700)
    try:
        with scoped_mlflow(uri):  # some artifact repositories read the global URIs
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(partial), tracking_uri=uri, registry_uri=uri
            )
    except MlflowException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise FtpipeError(f"Cannot download {ref}: {reason(exc)}.") from None
    for item in [partial, *partial.rglob("*")]:  # whatever the umask: writable by us only
        if not item.is_symlink():
            os.chmod(item, stat.S_IMODE(item.stat().st_mode) & ~0o022)
    try:
        partial.rename(cache)  # atomic; a concurrent download of the same model may win
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
