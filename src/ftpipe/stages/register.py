"""The register stage: log the export to MLflow and register it as the `challenger`.

Idempotent (see `ftpipe.registry.versions`): the same export gives its earlier version back, a
killed registration is finished, and the debris of killed ones is marked and reported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpipe.config import Config
from ftpipe.registry.versions import register_export
from ftpipe.stages.evaluate import Evaluation, training_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterResult:
    """A registered model version.

    Attributes:
        version: The registered version (name, version, run_id).
        evaluation: The evaluation attached as the gate's evidence, if any.
        reused: The export was registered before and this is that version.
        orphans: Debris of killed registrations marked FAILED or `ftpipe.orphan`.
    """

    version: Any
    evaluation: Evaluation | None
    reused: bool = False
    orphans: tuple[str, ...] = ()


def run(
    config: Config,
    model: str | Path | None = None,
    run_id: str | None = None,
    evaluation: str | Path | None = None,
    output: str | Path | None = None,
) -> RegisterResult:
    """Register the export as a version, with its evaluation when one is of this model.

    The same export registered again gives the same version (`RegisterResult.reused`).

    Args:
        config: The run's config.
        model: The export directory (default: train.output_dir/model).
        run_id: The MLflow run that trained it (default: the one recorded beside the export).
        evaluation: The model's evaluation.json (default: evaluate.output_dir/evaluation.json
            when it evaluated this model).
        output: Also write the new version as JSON here.
    """
    directory = Path(model or Path(config.train.output_dir) / "model")
    summary = Path(evaluation or Path(config.evaluate.output_dir) / "evaluation.json")
    found = Evaluation.load(summary) if summary.is_file() else None
    if found is not None and evaluation is None and not _same_dir(found.model, directory):
        found = None  # the last evaluation was of another model
    run_of_model = training_run(config, str(model) if model else None, run_id)
    done = register_export(config, directory, run_of_model, found)
    version = done.version
    for orphan in done.orphans:
        log.warning("Marked the debris of a killed registration: %s", orphan)
    if done.reused:
        log.info("%s was registered before: %s version %s", directory, version.name,
                 version.version)  # fmt: skip
    if output is not None:
        record = {"name": version.name, "version": str(version.version), "run_id": version.run_id,
                  "reused": done.reused, "orphans": list(done.orphans)}  # fmt: skip
        Path(output).write_text(json.dumps(record) + "\n")
    return RegisterResult(version, found, done.reused, done.orphans)


def _same_dir(a: str, b: Path) -> bool:
    return Path(a).is_dir() and Path(a).resolve() == b.resolve()
