"""Where Ray keeps a run's checkpoints and results, and which run there was left unfinished.

`train.storage` and `tune.storage` name it: an object-storage URI (`s3://`, `gs://`) or a
path. Ray Train writes every checkpoint there, so on a cluster any node's worker can resume
from any other's, and a driver started again finds the run it was driving. ftpipe marks a run
it saw through to the end (`ftpipe-finished`); the newest run of a config without that mark,
holding a checkpoint, is one a killed driver left behind, and the next `ftpipe train` of the
same config resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpipe.artifacts import is_uri, open_filesystem

FINISHED = "ftpipe-finished"
"""The empty file a run's directory gets once the driver has exported its model."""


@dataclass(frozen=True)
class RunStorage:
    """A storage root for Ray runs.

    Attributes:
        location: The root as configured: a URI, or an absolute local path.
        filesystem: The pyarrow file system of a URI; None for a local path, which Ray opens
            itself.
        path: The root within `filesystem` (for a local path, the path).
    """

    location: str
    filesystem: Any
    path: str

    @classmethod
    def open(cls, location: str | Path) -> RunStorage:
        """The storage at `location`; a relative path is made absolute (workers start elsewhere).

        Raises:
            FtpipeError: If a URI's file system cannot be opened (credentials, scheme).
        """
        if is_uri(location):
            filesystem, path = open_filesystem(str(location))
            return cls(str(location).rstrip("/"), filesystem, path.rstrip("/"))
        path = str(Path(str(location).removeprefix("file://")).absolute())
        return cls(path, None, path)

    @property
    def is_object_store(self) -> bool:
        """Whether this is object storage (reachable from every node by its URI)."""
        return self.filesystem is not None

    def uri(self, *parts: str) -> str:
        """The location of `parts` under the root, as a user would name it."""
        return "/".join([self.location, *parts])

    def reach(self, path: str) -> str:
        """A path Ray reports within this storage's file system, as a URI or a local path."""
        if not path or not self.is_object_store:
            return path
        return f"{self.location.partition('://')[0]}://{path}"

    def unfinished(self, prefix: str) -> str | None:
        """The run to resume: the newest named `prefix*`, if unfinished and checkpointed."""
        runs = sorted(
            info.base_name
            for info in self._list(self.path)
            if info.type.name == "Directory" and info.base_name.startswith(prefix)
        )
        if not runs:
            return None
        newest = runs[-1]
        names = {info.base_name for info in self._list(f"{self.path}/{newest}")}
        if FINISHED in names or not any(name.startswith("checkpoint_") for name in names):
            return None
        return newest

    def mark_finished(self, name: str) -> None:
        """Mark the run `name` as seen through to its export."""
        with self._filesystem.open_output_stream(f"{self.path}/{name}/{FINISHED}"):
            pass

    @property
    def _filesystem(self) -> Any:
        import pyarrow.fs

        return self.filesystem or pyarrow.fs.LocalFileSystem()

    def _list(self, path: str) -> list[Any]:
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(path, allow_not_found=True)
        return self._filesystem.get_file_info(selector)
