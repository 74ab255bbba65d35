"""The suite's promise to the user: a test session leaves the repository's own store alone.

`make run` writes the demo's runs to `mlflow.db` and its stages' files under `outputs/`, both
relative to the repository. A test that forgets to point a config at a temporary directory
would add its runs (FAILED ones, tiny models under /tmp) to the user's store, where they sort
above the demo's. tests/conftest.py takes a `Footprint` when the session starts and fails the
session, naming what changed, when the one it takes at the end differs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

GUARDED = ("mlflow.db", "outputs")
"""What `make run` writes in the repository, relative to its root."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Footprint:
    """Every guarded file under a root, with its size and content hash."""

    files: dict[str, tuple[int, str]]

    @classmethod
    def take(cls, root: Path, guarded: tuple[str, ...] = GUARDED) -> Footprint:
        """Read the guarded files (and every file under guarded directories) of `root`."""
        files = {}
        for name in guarded:
            top = root / name
            found = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
            for path in found:
                files[str(path.relative_to(root))] = (path.stat().st_size, _digest(path))
        return cls(files)

    def changes_since(self, before: Footprint) -> list[str]:
        """What was added, removed or rewritten since `before`, one line per file."""
        added = sorted(self.files.keys() - before.files.keys())
        removed = sorted(before.files.keys() - self.files.keys())
        changed = sorted(
            k for k in self.files.keys() & before.files.keys() if self.files[k] != before.files[k]
        )
        return (
            [f"added {name}" for name in added]
            + [f"removed {name}" for name in removed]
            + [f"changed {name}" for name in changed]
        )
