"""Run one pipeline stage (`ftpipe.stages`) whose inputs and outputs are artifacts.

A KFP component (components/) names its stage and which config keys its artifacts fill; this
module calls the stage's `run` with the config those artifacts complete, the same function the
CLI calls. Without a Ray address the stage runs in this process. With one, tune and train run
as a Ray job on the cluster instead (`ftpipe stage stage.json`): the config travels in the
job's working directory, inputs are read from their object-storage URIs by whoever needs them
(`ftpipe.artifacts`), and the outputs are written on the cluster and published to their URIs
when the stage succeeds. Wherever it runs, the process that loads the stage's config first sets
its Hub access from `model.offline`, and a stage of a pipeline run tags what it logs with the
run's id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftpipe.artifacts import is_uri, localize, publish
from ftpipe.config import Config
from ftpipe.config.load import validate_config
from ftpipe.environ import restored_environ
from ftpipe.registry.lineage import NONE, PIPELINE_RUN_VAR, pipeline_run
from ftpipe.stages import check_config, load_checked_config, stage_run

SPEC = "stage.json"
CONFIG = "config.yaml"


@dataclass
class Stage:
    """One stage, with its artifacts as config overrides.

    Each artifact is a pair [local path, URI], as KFP gives them: the stage uses the path
    when it runs here and the URI when it runs as a Ray job on the cluster.

    Attributes:
        command: The stage's name in `ftpipe.stages` (prep, recommend, tune, train, ...).
        inputs: Config key -> artifact the stage reads.
        outputs: Config key -> artifact the stage writes.
        overrides: Further dotted config overrides, e.g. ["tune.final=none"].
        arguments: Keyword arguments of the stage's `run`, e.g. {"model": PATH}.
        pipeline_run_id: The pipeline run the stage belongs to, for the lineage tags of what
            it logs; empty takes this process's own (KFP_RUN_ID on a KFP cluster's pod), which
            a Ray job would otherwise not know.
    """

    command: str
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    outputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    arguments: dict[str, Any] = field(default_factory=dict)
    pipeline_run_id: str = ""


def config_text(config: str) -> str:
    """The config's YAML: `config` is either YAML text or the path of a YAML file."""
    if "\n" not in config and Path(config).is_file():
        return Path(config).read_text()
    return config


def load_stage_config(config: str) -> Config:
    """The validated config of a stage (YAML text or a path), checked by its task.

    It also allows or forbids Hub downloads for this process as `model.offline` says.
    """
    loaded = validate_config(yaml.safe_load(config_text(config)), "the pipeline's config")
    return check_config(loaded)


def run_stage(stage: Stage, config: str, ray_address: str = "") -> None:
    """Run `stage` with `config` (YAML text or a path): here, or as a Ray job at the address.

    Raises:
        FtpipeError: If the command fails (the message is the command's own).
    """
    remote = bool(ray_address)
    pick = 1 if remote else 0
    spec = {
        "command": stage.command,
        "overrides": stage.overrides,
        "arguments": stage.arguments,
        "inputs": {key: pair[pick] for key, pair in stage.inputs.items()},
        "outputs": {key: pair[pick] for key, pair in stage.outputs.items()},
        "pipeline_run_id": stage.pipeline_run_id or pipeline_run(),
    }
    with tempfile.TemporaryDirectory(prefix=f"ftpipe-{stage.command}-") as work:
        directory = Path(work)
        (directory / CONFIG).write_text(config_text(config))
        (directory / SPEC).write_text(json.dumps(spec))
        if not remote:
            execute(directory / SPEC)
            return
        from ftpipe.train.ray_train import submit_job

        submit_job(ray_address, ["stage", SPEC], directory, f"ftpipe-{stage.command}")
    for path, uri in stage.outputs.values():  # what KFP uploads is what sits at the path
        if localize(uri).resolve() != Path(path).resolve():
            shutil.copytree(localize(uri), path, dirs_exist_ok=True)


def execute(spec: Path) -> None:
    """Run the stage described in `spec` (beside its config); publish outputs that are URIs."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # unless a caller set it up
    stage = json.loads(spec.read_text())
    with tempfile.TemporaryDirectory(prefix="ftpipe-outputs-") as scratch:
        local = {
            key: str(Path(scratch) / key) if is_uri(target) else target
            for key, target in stage["outputs"].items()
        }
        artifacts = [f"{key}={value}" for key, value in {**stage["inputs"], **local}.items()]
        config = load_checked_config(spec.with_name(CONFIG), [*stage["overrides"], *artifacts])
        with _pipeline_run(stage["pipeline_run_id"]):
            stage_run(stage["command"])(config, **stage["arguments"])
        for key, target in stage["outputs"].items():
            if is_uri(target):
                publish(Path(local[key]), target)


@contextlib.contextmanager
def _pipeline_run(run_id: str) -> Iterator[None]:
    """FTPIPE_PIPELINE_RUN_ID set to `run_id` (unless "none") while the block runs, then restored.

    Lineage reads it for the tags of what the stage logs, and a local Ray that the stage starts
    hands it on to its workers. Restored, not left set: one process (a test, a notebook) may run
    stages of several pipeline runs.
    """
    with restored_environ(PIPELINE_RUN_VAR):
        if run_id != NONE:
            os.environ[PIPELINE_RUN_VAR] = run_id
        yield
