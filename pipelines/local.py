"""`ftpipe run`: the whole pipeline on this machine, through the KFP local runner.

Each stage runs in a subprocess of this Python (no containers, no virtualenvs), Ray starts
locally inside the tune and train stages, and MLflow is the config's tracking URI (sqlite by
default). The runner's cache is on: a rerun with the same config and data replays every stage
up to registration, which always runs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml
from kfp import dsl, local

from ftpipe.artifacts import absolute_tracking_uri
from ftpipe.config import Config
from pipelines.finetune import build


@dataclass
class LocalRun:
    """Where a local run left everything."""

    artifacts: Path
    model: Path
    tracking_uri: str
    model_name: str
    version: str
    gate: str
    decision: Path
    champion: str | None

    def lines(self) -> list[str]:
        """The end-of-run summary for a person."""
        if self.champion == self.version:  # the same export registers as the same version
            verdict = "PROMOTED to champion" if self.gate == "promote" else "already champion"
        else:
            verdict = f"not promoted (champion: {self.champion or 'none'})"
        return [
            f"Registered {self.model_name} version {self.version} (alias challenger): {verdict}.",
            f"Gate decision: {self.decision}",
            f"Model export: {self.model}",
            f"Stage artifacts: {self.artifacts}",
            f"MLflow UI: mlflow ui --backend-store-uri {self.tracking_uri}",
        ]


def run_local(config: Config) -> LocalRun:
    """Run the pipeline with the local runner; raise if any stage fails."""
    from ftpipe.registry.promote import champion

    root = Path(config.pipeline.local_root).absolute()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),  # this environment has ftpipe
        pipeline_root=str(root),
        enable_caching=True,
        raise_on_error=True,
    )
    uri = absolute_tracking_uri(config.registry.tracking_uri)
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    with warnings.catch_warnings():
        # Pod settings and container images mean nothing here; the runner says so per task.
        warnings.filterwarnings("ignore", message=".*(have no effect|non-Python base image).*")
        # The local runner's job id is a random number seen nowhere else; its job name is
        # the run's directory under pipeline.local_root, which a person can find.
        pipeline = build(config, retry=False, pipeline_run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
        task = pipeline(config=text, ray_address="", mlflow_uri=uri)
    outputs = task.outputs
    registry = config.model_copy(update={"registry": config.registry.model_copy(
        update={"tracking_uri": uri})})  # fmt: skip
    return LocalRun(
        artifacts=root,
        model=Path(outputs["model"].path),
        tracking_uri=uri,
        model_name=config.registry.model_name,
        version=outputs["version"],
        gate=outputs["gate"],
        decision=Path(outputs["decision"].path),
        champion=champion(registry),
    )
