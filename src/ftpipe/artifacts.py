"""Directories that may live in object storage: bring them local, send them back.

On a Kubeflow cluster the pipeline's artifacts are object-storage URIs (`s3://`, `gs://`, or
KFP's `minio://`), and the Ray workers that read the prepared data run on other nodes than the
pipeline's pods. Each reader calls `localize` on the URI it was given: the first call on a node
downloads the directory into a cache keyed by the URI, later calls reuse it. Plain paths pass
through untouched, so the local runner never copies anything.

Credentials and endpoints come from the environment, as pyarrow reads them (for example
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL for S3 or MinIO).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ftpipe.errors import FtpipeError

CACHE = Path(os.environ.get("FTPIPE_ARTIFACT_CACHE", Path.home() / ".cache/ftpipe/artifacts"))
"""Where downloaded directories are kept (FTPIPE_ARTIFACT_CACHE overrides it)."""


def is_uri(location: str | Path) -> bool:
    """Whether `location` names object storage rather than a local path."""
    scheme, sep, _ = str(location).partition("://")
    return bool(sep) and scheme != "file"


def absolute(location: str | Path) -> str:
    """A URI as it is; a local path made absolute (for processes in other directories)."""
    return str(location) if is_uri(location) else str(localize(location).absolute())


def absolute_tracking_uri(uri: str) -> str:
    """A relative `sqlite:///FILE` tracking URI made absolute; any other URI unchanged.

    Stages, trials and Ray jobs run in other directories: they must all open one database.
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return f"{prefix}{Path(uri[len(prefix) :]).absolute()}"
    return uri


def _arrow_uri(uri: str) -> str:
    # KFP's default artifact store is MinIO, which speaks S3.
    return "s3://" + uri.removeprefix("minio://") if uri.startswith("minio://") else uri


def open_filesystem(uri: str):
    """The pyarrow file system of a URI, and the path within it."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(_arrow_uri(uri))
    except (OSError, ValueError) as exc:
        raise FtpipeError(
            f"Cannot open {uri}: {exc}. Check the URI and the storage credentials in the "
            "environment (AWS_* for s3:// and minio://, GOOGLE_APPLICATION_CREDENTIALS for gs://)."
        ) from None


def localize(location: str | Path) -> Path:
    """A local directory with the contents of `location` (downloaded once per node)."""
    if not is_uri(location):
        return Path(str(location).removeprefix("file://"))
    uri = str(location).rstrip("/")
    target = CACHE / hashlib.sha256(uri.encode()).hexdigest()[:24]
    if not target.is_dir():
        import pyarrow.fs

        filesystem, path = open_filesystem(uri)
        staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(path, str(staging), source_filesystem=filesystem)
        staging.rename(target)  # whole or not at all: a reader never sees half a download
    return target


def publish(directory: Path, location: str) -> None:
    """Copy a local directory to `location` (a URI, or a local path it replaces)."""
    if not is_uri(location):
        target = localize(location)
        if target.resolve() != directory.resolve():
            shutil.copytree(directory, target, dirs_exist_ok=True)
        return
    import pyarrow.fs

    filesystem, path = open_filesystem(location)
    pyarrow.fs.copy_files(str(directory), path, destination_filesystem=filesystem)
