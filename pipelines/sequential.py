"""`ftpipe run --no-kfp`: the pipeline's stages one after another in this process, without KFP.

What the RayJob and RayCronJob of infra/ run on the cluster's head. The stages are those of the
KFP pipeline (pipelines/finetune.py): prep, recommend, tune, train on the sweep's best config
(or, without the sweep, on the config as given), evaluate, register, promote, each run through
`ftpipe.stage.run_stage` as its KFP component runs it, so they tag what they log with the run's
id. Training and tuning run on the Ray cluster `train.ray_address` names (a local Ray when it is
unset).

Every run writes under a directory of its own, `pipeline.local_root/RUN` (RUN: the pipeline's
name and the start time, which is also the run's id in the lineage tags), one subdirectory per
stage, as KFP gives each run fresh artifacts. The sweep and the training run take their names
from the config, so a scheduled rerun of the same config neither collides with the last sweep
nor resumes the last training. Ray workers on other nodes cannot read this machine's disk, so
with `train.storage` set (a cluster of several nodes needs it) prep's output is copied to
`train.storage/RUN/prep`, and tune, train and the stages after them read the data from there.

Unlike the pipeline, nothing is cached, and promote always runs: the gate records its decision
on the version whether or not it moves the `champion` alias (the pipeline's promote step runs
only when a dry run of the gate says it will).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ftpipe.artifacts import absolute_tracking_uri, publish
from ftpipe.config import Config
from ftpipe.config.load import apply_overrides
from ftpipe.stage import Stage, run_stage
from ftpipe.train.run_storage import RunStorage
from pipelines.local import LocalRun

Say = Callable[[str], None]
"""Where progress lines go (the command line's console)."""

OUTPUTS = {
    "data.output_dir": "prep",
    "recommend.output_dir": "recommend",
    "tune.output_dir": "tune",
    "train.output_dir": "train",
    "evaluate.output_dir": "evaluate",
}
"""Each stage's output key and its directory under the run's."""

STAGES = ("prep", "recommend", "tune", "train", "evaluate", "register", "promote")
"""The stages, in the order they run."""


@dataclass(frozen=True)
class _Steps:
    """Runs the stages of one pipeline run and reports their progress."""

    run_id: str
    stages: tuple[str, ...]
    say: Say

    def run(self, command: str, config: str, overrides: list[str] | None = None,
            **arguments: str) -> None:  # fmt: skip
        """Run stage `command` with `config` (YAML text or a path); its errors end the run.

        Args:
            command: The stage's name in `ftpipe.stages`.
            config: The stage's config, as YAML text or the path of a YAML file.
            overrides: Dotted config overrides for this stage only.
            **arguments: Keyword arguments of the stage's `run`.
        """
        step = f"[{self.stages.index(command) + 1}/{len(self.stages)}] {command}"
        self.say(f"{step} started")
        started = time.perf_counter()
        try:
            run_stage(Stage(command, overrides=overrides or [], arguments=arguments,
                            pipeline_run_id=self.run_id), config)  # fmt: skip
        except Exception:
            self.say(f"{step} failed after {time.perf_counter() - started:.0f}s")
            raise
        self.say(f"{step} finished in {time.perf_counter() - started:.0f}s")


def _text(config: Config, overrides: list[str]) -> str:
    """`config` with dotted `overrides`, as the YAML text a stage loads."""
    return yaml.safe_dump(apply_overrides(config.model_dump(mode="json"), overrides),
                          sort_keys=False)  # fmt: skip


def run_sequential(config: Config, say: Say = print, tune: bool = True) -> LocalRun:
    """Run the pipeline's stages in order in this process; the first that fails ends the run.

    Args:
        config: The run's config.
        say: Receives one line as each stage starts and one as it finishes (or fails).
        tune: Sweep, then train the best config; False trains `config` as it is (with
            `strategy.name=auto` resolved by recommend).

    Returns:
        Where the run left everything, and what the gate decided.

    Raises:
        FtpipeError: The error of the stage that failed (others propagate as they are).
    """
    run_id = f"{config.pipeline.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = Path(config.pipeline.local_root).absolute() / run_id
    uri = absolute_tracking_uri(config.registry.tracking_uri)  # trials run in other directories
    settings = [f"{key}={root / name}" for key, name in OUTPUTS.items()]
    settings.append(f"registry.tracking_uri={uri}")
    steps = _Steps(run_id, tuple(s for s in STAGES if tune or s != "tune"), say)

    base = _text(config, settings)
    steps.run("prep", base)
    steps.run("recommend", base)
    if config.train.storage:
        data = RunStorage.open(config.train.storage).uri(run_id, "prep")
        publish(root / "prep", data)
        say(f"Copied the prepared data to {data}, where every Ray node reads it")
        settings.append(f"data.output_dir={data}")
    trained = _text(config, settings)  # the whole config: the run's directories, data and all
    if tune:
        # As in the pipeline: the sweep only reports, and train fits its best config afresh.
        steps.run("tune", trained, ["tune.final=none"])
        (sweep,) = (root / "tune").glob("sweep-*")
        trained = str(sweep / "best.yaml")
    steps.run("train", trained)
    steps.run("evaluate", trained)
    registered, decision = root / "register" / "registered.json", root / "promote" / "decision.json"
    registered.parent.mkdir(parents=True, exist_ok=True)
    steps.run("register", trained, output=str(registered))
    version = json.loads(registered.read_text())["version"]
    steps.run("promote", trained, version=version, output=str(decision))
    outcome = json.loads(decision.read_text())
    return LocalRun(
        artifacts=root,
        model=root / "train" / "model",
        tracking_uri=uri,
        model_name=config.registry.model_name,
        version=version,
        gate="promote" if outcome["decision"] and outcome["decision"]["promote"] else "keep",
        decision=decision,
        champion=outcome["champion_after"],
    )
