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
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ftpipe.artifacts import absolute_tracking_uri, publish
from ftpipe.config import Config
from ftpipe.config.load import apply_overrides
from ftpipe.errors import FtpipeError
from ftpipe.report import write_run_report
from ftpipe.stage import Stage, run_stage
from ftpipe.train.run_storage import RunStorage
from pipelines.console import LOG, Board, showing
from pipelines.local import LocalRun
from pipelines.results import Reader, Results, read

log = logging.getLogger(__name__)

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


def _readers(results: Results) -> dict[str, Reader]:
    """Each stage's one-line result, read from its directory under the run's."""
    return {
        "register": lambda d: results.register(json.loads(
            (d / "registered.json").read_text())["version"]),
        "promote": lambda d: results.gate(d / "decision.json"),
    } | {name: getattr(results, name) for name in OUTPUTS.values()}  # fmt: skip


@dataclass(frozen=True)
class _Steps:
    """Runs the stages of one pipeline run and shows their progress on the board."""

    run_id: str
    root: Path
    board: Board
    readers: dict[str, Reader]

    def run(self, command: str, config: str, overrides: list[str] | None = None,
            **arguments: str) -> None:  # fmt: skip
        """Run stage `command` with `config` (YAML text or a path); its errors end the run.

        Args:
            command: The stage's name in `ftpipe.stages`.
            config: The stage's config, as YAML text or the path of a YAML file.
            overrides: Dotted config overrides for this stage only.
            **arguments: Keyword arguments of the stage's `run`.
        """
        self.board.start(command)
        try:
            run_stage(Stage(command, overrides=overrides or [], arguments=arguments,
                            pipeline_run_id=self.run_id), config)  # fmt: skip
        except FtpipeError as exc:
            self.board.fail(command, str(exc))
            raise
        except Exception as exc:
            log.exception("%s failed", command)  # the traceback goes to the run's log
            self.board.fail(command, f"{type(exc).__name__}: {exc}")
            raise
        self.board.finish(command, read(self.readers[command], self.root / command))


def _text(config: Config, overrides: list[str]) -> str:
    """`config` with dotted `overrides`, as the YAML text a stage loads."""
    return yaml.safe_dump(apply_overrides(config.model_dump(mode="json"), overrides),
                          sort_keys=False)  # fmt: skip


def run_sequential(config: Config, tune: bool = True, verbose: bool = False) -> LocalRun:
    """Run the pipeline's stages in order in this process; the first that fails ends the run.

    The stages' table shows on the terminal; their output goes to the run's log
    (`pipeline.local_root/RUN/run.log`, pipelines/console.py).

    Args:
        config: The run's config.
        tune: Sweep, then train the best config; False trains `config` as it is (with
            `strategy.name=auto` resolved by recommend).
        verbose: Also stream the log to the terminal.

    Returns:
        Where the run left everything, and what the gate decided.

    Raises:
        StageFailed: A stage failed: its error paragraph and the log's path.
    """
    run_id = f"{config.pipeline.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = Path(config.pipeline.local_root).absolute() / run_id
    board = Board(tuple(s for s in STAGES if tune or s != "tune"))
    with showing(board, root / LOG, verbose):
        return _run(config, run_id, _Steps(run_id, root, board, _readers(Results.of(config))),
                    tune)  # fmt: skip


def _run(config: Config, run_id: str, steps: _Steps, tune: bool) -> LocalRun:
    """Run the stages with `steps`; where the run left everything."""
    root = steps.root
    uri = absolute_tracking_uri(config.registry.tracking_uri)  # trials run in other directories
    settings = [f"{key}={root / name}" for key, name in OUTPUTS.items()]
    settings.append(f"registry.tracking_uri={uri}")

    base = _text(config, settings)
    steps.run("prep", base)
    steps.run("recommend", base)
    if config.train.storage:
        data = RunStorage.open(config.train.storage).uri(run_id, "prep")
        publish(root / "prep", data)
        log.info("Copied the prepared data to %s, where every Ray node reads it", data)
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
        report=write_run_report(root),
    )
