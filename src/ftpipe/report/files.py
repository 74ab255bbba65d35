"""Where a pipeline run left each stage's outputs, found by the files they hold.

Two layouts hold a run: the KFP local runner's (`RUN/<task>/<output name>/...`, e.g.
`RUN/evaluate/evaluation/evaluation.json`) and `ftpipe run --no-kfp`'s (`RUN/<stage>/...`,
e.g. `RUN/evaluate/evaluation.json`). Rather than knowing both, the report looks for each
stage's signature file anywhere under the run, skipping the bulky folders no signature is in
(checkpoints, Ray trials, exported models).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ftpipe.errors import DataError

SIGNATURES = {
    "prep": "stats.json",
    "recommend": "recommendation.json",
    "sweep": "best.json",
    "train": "result.json",
    "evaluate": "evaluation.json",
    "registered": "registered.json",
    "decision": "decision.json",
}
"""Each output's file: its folder is the stage's output (files, for the last two)."""
SIGNATURE_KINDS = {name: kind for kind, name in SIGNATURES.items()}

_SKIPPED = ("checkpoint_", "_trial_", ".", "ray", "model")
"""Folders whose names start so hold no signature file: not searched (they can be large)."""

_REQUIRED_KEYS = {"stats.json": "splits", "result.json": "history", "best.json": "metric"}
"""A key the signature file must have, where its name alone is common (Ray writes result.json)."""


@dataclass(frozen=True)
class RunFiles:
    """The outputs of one pipeline run; None where a stage left nothing (it did not run yet).

    Attributes:
        root: The run's directory.
        prep: prep's output folder (stats.json).
        recommend: recommend's output folder (recommendation.json, recommendation.txt).
        sweep: The sweep's folder (best.json, results.csv, plots).
        train: train's output folder (result.json, tracking.json, model/).
        evaluate: evaluate's output folder (evaluation.json, metrics and figures).
        registered: register's record of the version it registered (registered.json).
        decision: The gate's last decision (decision.json: promote's, else register's).
    """

    root: Path
    prep: Path | None = None
    recommend: Path | None = None
    sweep: Path | None = None
    train: Path | None = None
    evaluate: Path | None = None
    registered: Path | None = None
    decision: Path | None = None

    @classmethod
    def find(cls, root: Path, replayed: Sequence[Path] = ()) -> RunFiles:
        """Search `root` for every stage's output (the newest, where a file occurs twice).

        Args:
            root: The run's directory.
            replayed: Stage directories of earlier runs whose outputs this run reused from
                the cache, searched too (a file under `root` wins over theirs).

        Raises:
            DataError: If `root` is not a directory or holds no stage's output.
        """
        root = Path(root)
        found: dict[str, Path] = {}
        for directory in replayed:
            found |= {SIGNATURE_KINDS[path.name]: path for path in _signature_files(directory)}
        for path in _signature_files(root):
            kind = SIGNATURE_KINDS[path.name]
            known = found.get(kind)
            # This run's own file beats a replayed one; of two of its own, the newer wins.
            if (known is None or not known.is_relative_to(root)
                    or path.stat().st_mtime > known.stat().st_mtime):  # fmt: skip
                found[kind] = path
        if not found:
            raise DataError(
                f"{root} holds no pipeline run: none of {', '.join(SIGNATURES.values())} is "
                "under it. Pass the run's directory: pipeline.local_root/<run name> (`ftpipe "
                "run` prints it)."
            )
        folders = {k: p.parent for k, p in found.items() if k not in ("registered", "decision")}
        return cls(root, registered=found.get("registered"), decision=found.get("decision"),
                   **folders)  # fmt: skip


def _signature_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root} is not a directory. Pass a pipeline run's directory.")
    names = set(SIGNATURES.values())
    hits = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(_SKIPPED)]
        hits += [Path(folder, f) for f in files if f in names and _is_signature(Path(folder, f))]
    return hits


def _is_signature(path: Path) -> bool:
    key = _REQUIRED_KEYS.get(path.name)
    if key is None:
        return True
    try:
        return key in json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return False
