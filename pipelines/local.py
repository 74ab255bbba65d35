"""`ftpipe run`: the whole pipeline on this machine, through the KFP local runner.

Each stage runs in a subprocess of this Python (no containers, no virtualenvs), Ray starts
locally inside the tune and train stages, and MLflow is the config's tracking URI (sqlite by
default). The runner's cache is on: a rerun with the same config and data replays every stage
up to registration, which always runs.

The runner's output (each task's executor input and streamed output) goes to the run's log,
`pipeline.local_root/RUN/run.log`; the terminal shows the stages' table (pipelines/console.py),
which `_Watcher` keeps up to date from the runner's lines as they reach the log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kfp import dsl, local

from ftpipe.artifacts import absolute_tracking_uri
from ftpipe.config import Config
from ftpipe.errors import DataError
from ftpipe.report import write_run_report
from pipelines.console import Board, RunConsole, showing
from pipelines.finetune import build
from pipelines.results import Reader, Results, read

log = logging.getLogger(__name__)

TASKS = ("identify", "prep", "recommend", "tune", "train", "evaluate", "register", "promote")
"""The pipeline's tasks, in the order they run (pipelines/finetune.py)."""

ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXECUTING = re.compile(r"Executing task '([\w-]+)'")
CACHE_HIT = re.compile(r"Task ([\w-]+) cache hit \(key=([0-9a-f]+)")
FINISHED = re.compile(r"Task '([\w-]+)' finished with status (SUCCESS|FAILURE)")
"""The runner's lines that say a task started, replayed from the cache, or ended."""

STREAMED = "    "
"""How the runner indents the lines a task's process prints."""


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
    report: Path | None = None

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
            *([f"Run report: {self.report}"] if self.report else []),
            f"MLflow UI: mlflow ui --backend-store-uri {self.tracking_uri}",
        ]


def _parameters(task_dir: Path) -> dict[str, str]:
    """The parameters a task returned (its executor output)."""
    return json.loads((task_dir / "executor_output.json").read_text())["parameterValues"]


def _readers(results: Results) -> dict[str, Reader]:
    """Each task's one-line result, read from its directory (its outputs: pipelines/finetune)."""
    return {
        "identify": lambda d: f"config hash {_parameters(d)['config_hash'][:12]}",
        "prep": lambda d: results.prep(d / "prepared"),
        "recommend": lambda d: results.recommend(d / "recommendation"),
        "tune": lambda d: results.tune(d / "sweep"),
        "train": results.train,  # the model artifact's parent: train.output_dir
        "evaluate": lambda d: results.evaluate(d / "evaluation"),
        "register": lambda d: results.register((d / "version").read_text().strip()),
        "promote": lambda d: results.gate(d / "record" / "decision.json"),
    }


class _Errors:
    """The last exception a task's process printed: the paragraph under its traceback."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._reading = ""  # "trace" in a traceback's frames, "message" in its message

    def feed(self, line: str) -> None:
        """Take one line of the task's output (without the runner's indent)."""
        if line.startswith("Traceback (most recent call last):"):
            self._reading = "trace"
        elif self._reading == "trace" and line and not line.startswith(" "):
            self._lines, self._reading = [line], "message"
        elif self._reading == "message":
            if line.strip() and not line.startswith(("During handling", "The above exception")):
                self._lines.append(line)
            else:
                self._reading = ""

    def paragraph(self) -> str:
        """The message, without the module path of ftpipe's own errors (they name the fix)."""
        return re.sub(r"^ftpipe\.errors\.\w+: ", "", "\n".join(self._lines))


@dataclass
class _Watcher:
    """Follows the runner's lines: each task's state and, as it ends, its one-line result.

    Attributes:
        board: The table to keep up to date.
        readers: Each task's result reader (`_readers`).
        root: The pipeline root (`pipeline.local_root`).
        cache: The runner's cache directory, whose entries name a cached task's outputs.
        before: The names already under `root`: the run's directory is the one that is new.
        console: Moves the log into the run's directory once that exists.
        run_dir: This run's directory, once the runner has made it.
        errors: The failing task's error paragraph, as its output goes by.
        replayed: The task directories of earlier runs whose outputs the cache replayed.
    """

    board: Board
    readers: dict[str, Reader]
    root: Path
    cache: Path
    before: set[str]
    console: RunConsole | None = None
    run_dir: Path | None = None
    errors: _Errors = field(default_factory=_Errors)
    replayed: list[Path] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        """Take one line of the log."""
        text = ANSI.sub("", line)
        if text.startswith(STREAMED):
            self.errors.feed(text[len(STREAMED) :])
        elif started := EXECUTING.search(text):
            self.errors = _Errors()
            self.board.start(started[1])
        elif hit := CACHE_HIT.search(text):
            replayed = self._cached_dir(hit[2])
            self.replayed += [replayed] if replayed else []
            self._finish(hit[1], replayed, "cached")
        elif ended := FINISHED.search(text):
            task = ended[1]
            if ended[2] == "SUCCESS":
                self._finish(task, self._task_dir(task), "done")
            else:
                self.board.fail(task, self.errors.paragraph() or f"task {task} failed")

    def _finish(self, task: str, directory: Path | None, state: str) -> None:
        reader = self.readers.get(task)
        found = read(reader, directory) if reader and directory else ""
        self.board.finish(task, found, state)

    def _task_dir(self, task: str) -> Path | None:
        """`task`'s directory in this run's; the first call finds the run's directory."""
        if self.run_dir is None:
            new = sorted(
                path
                for path in self.root.iterdir()
                if path.is_dir() and path.name[0] != "." and path.name not in self.before
            )
            if not new:
                return None
            self.run_dir = new[-1]
            if self.console is not None:
                self.console.keep_log_in(self.run_dir)
        return self.run_dir / task

    def _cached_dir(self, key: str) -> Path | None:
        """The directory of the run whose outputs a cache hit (its key's prefix) replays."""
        for entry in self.cache.glob(f"{key}*.json"):
            for output in json.loads(entry.read_text()).values():
                if isinstance(output, dict) and output.get("uri"):
                    return Path(output["uri"]).parent
        return None


def run_local(config: Config, verbose: bool = False) -> LocalRun:
    """Run the pipeline with the local runner, showing its table; raise if any stage fails.

    Args:
        config: The run's config.
        verbose: Also stream the runner's log to the terminal.

    Raises:
        StageFailed: A stage failed (its error paragraph and the log's path).
    """
    root = Path(config.pipeline.local_root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    board = Board(TASKS)
    watcher = _Watcher(board, _readers(Results.of(config)), root, root / ".kfp_cache",
                       {path.name for path in root.iterdir()})  # fmt: skip
    # The run's directory is the runner's to name: the log moves there once it exists.
    started = root / f".ftpipe-run-{os.getpid()}.log"
    with showing(board, started, verbose, watcher) as console:
        watcher.console = console
        finished = _run(config, root, watcher.cache)
        # Promote runs only when the gate passes; otherwise its row says why not.
        if watcher.run_dir is not None:
            register = watcher.run_dir / "register" / "record"
            board.skip_waiting(read(Results.gate, register / "decision.json"))
            finished.report = _report(watcher.run_dir, watcher.replayed)
    return finished


def _report(run_dir: Path, replayed: list[Path]) -> Path | None:
    """The run's report, from its own outputs and those the cache replayed (`replayed`).

    None, with a warning in the log, when it cannot be written: the report is a view of the
    run, which has succeeded.
    """
    try:
        return write_run_report(run_dir, replayed)
    except (DataError, OSError) as exc:
        log.warning("No run report: %s", exc)  # in the run's log
        return None


def _run(config: Config, root: Path, cache: Path) -> LocalRun:
    """Run the pipeline under `root`, caching in `cache`; where it left everything."""
    from ftpipe.registry.promote import champion

    local.init(
        runner=local.SubprocessRunner(use_venv=False),  # this environment has ftpipe
        pipeline_root=str(root),
        enable_caching=True,
        cache_root=str(cache),
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
