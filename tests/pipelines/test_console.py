"""What `ftpipe run` shows: the stages' table on the terminal, everything else in the run's log."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from pipelines.console import Board
from pipelines.local import TASKS, _Watcher
from tests.helpers import REPO, ftpipe

SUMMARY = ("Registered tiny version 1 (alias challenger): ", "Gate decision: ",
           "Model export: ", "Stage artifacts: ", "Run report: ",
           "MLflow UI: mlflow ui --backend-store-uri ")  # fmt: skip
"""How the end-of-run summary's lines begin (LocalRun.lines)."""


class Clock:
    """A clock the test moves by hand, so durations are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rendered(board: Board) -> list[str]:
    """The board's table as plain text lines, as a wide terminal shows it."""
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(board)
    return [line.rstrip() for line in console.file.getvalue().splitlines()]


def test_the_table_shows_each_stage_state_duration_and_result():
    clock = Clock()
    board = Board(("prep", "tune", "train", "evaluate", "promote"), clock=clock)
    said: list[str] = []
    board.say = said.append
    board.log = Path("/runs/r1/run.log")
    board.finish("prep", "80 rows (train 44, eval 20, test 16), fingerprint 8e7fc34e7ce5",
                 "cached")  # fmt: skip
    board.start("tune")
    clock.now += 65
    board.finish("tune", "1 trial, best macro_f1 0.3333 with train.lr=0.003")
    board.start("train")
    clock.now += 7
    board.fail("train", "train.batch_size=0 must be positive.\nSet it in the config.")
    board.skip_waiting()
    board.start("condition-1")  # a KFP sub-DAG, not a stage: ignored

    lines = rendered(board)
    assert lines[0].split() == ["stage", "state", "time", "result"]
    assert lines[1].split() == ["prep", "cached", "80", "rows", "(train", "44,", "eval", "20,",
                                "test", "16),", "fingerprint", "8e7fc34e7ce5"]  # fmt: skip
    assert lines[2].split()[:4] == ["tune", "done", "65s", "1"]
    assert lines[3].split() == ["train", "failed", "7s", "train.batch_size=0", "must", "be",
                                "positive."]  # fmt: skip
    assert lines[4].split() == ["evaluate", "skipped"]
    assert lines[5].split() == ["promote", "skipped"]
    assert lines[6] == "Full log: /runs/r1/run.log"
    assert board.failure == ("train", "train.batch_size=0 must be positive.\nSet it in the config.")
    # Where the table is not live, each start and end is one line.
    assert said == [
        "[1/5] prep cached: 80 rows (train 44, eval 20, test 16), fingerprint 8e7fc34e7ce5",
        "[2/5] tune started",
        "[2/5] tune finished in 65s: 1 trial, best macro_f1 0.3333 with train.lr=0.003",
        "[3/5] train started",
        "[3/5] train failed after 7s",
    ]


# What the KFP local runner logs around a task that fails (tune's real output, shortened).
FAILED_TUNE = """\
10:29:26.730 - INFO - Executing task \x1b[96m'tune'\x1b[0m
10:29:26.730 - INFO - Streamed logs:

    2026-12-01 10:30:03,012\tERROR serialization.py:602 -- No module named 'x'
    Traceback (most recent call last):
      File "ray/_private/serialization.py", line 595, in deserialize_objects
        obj = self._deserialize_object(
    ModuleNotFoundError: No module named 'x'
    Traceback (most recent call last):
      File "<frozen runpy>", line 198, in _run_module_as_main
      File "/work/main/src/ftpipe/tune/sweep.py", line 139, in _sweep
        raise FtpipeError(
    ftpipe.errors.FtpipeError: No trial of /runs/r1/tune/sweep reported macro_f1; see the trial
    errors above.


10:30:11.521 - ERROR - Task \x1b[96m'tune'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
"""


def test_the_watcher_follows_the_runner_and_finds_a_failed_tasks_error(tmp_path):
    root = tmp_path / "pipeline"
    run = root / "ftpipe-finetune-2026-12-01-10-28-53-875631"
    (run / "recommend" / "recommendation").mkdir(parents=True)
    (run / "recommend" / "recommendation" / "recommendation.json").write_text(
        '{"strategy": "freeze", "case": "small-dissimilar"}'
    )
    board = Board(("identify", "recommend", "tune", "train"))
    watcher = _Watcher(board, {"recommend": lambda d: f"read {d.name}"}, root, root / ".kfp_cache",
                       before=set())  # fmt: skip
    lines = ["10:29:01 - INFO - Executing task \x1b[96m'recommend'\x1b[0m",
             "10:29:26 - INFO - Task \x1b[96m'recommend'\x1b[0m finished with status "
             "\x1b[92mSUCCESS\x1b[0m", *FAILED_TUNE.splitlines()]  # fmt: skip
    for line in lines:
        watcher(line)

    assert watcher.run_dir == run
    assert board.failure == ("tune", "No trial of /runs/r1/tune/sweep reported macro_f1; see the "
                             "trial\nerrors above.")  # fmt: skip
    table = rendered(board)
    assert table[1].split() == ["identify", "waiting"]
    assert table[2].split()[:2] == ["recommend", "done"]
    assert table[2].endswith("read recommend")
    assert table[3].split()[:2] == ["tune", "failed"]


# A stage's run, in a process of its own: the console points the process's file descriptors
# at the log. The stage prints, a subprocess prints, and then a stage fails.
STAGES_PRINT = """
import subprocess, sys
from pathlib import Path
from pipelines.console import Board, showing

board = Board(("prep", "train"))
with showing(board, Path(sys.argv[1]), verbose=sys.argv[2] == "verbose"):
    board.start("prep")
    print("executor input JSON")
    subprocess.run(["sh", "-c", "echo from a child; echo to stderr >&2"])
    board.finish("prep", "80 rows")
    board.start("train")
    board.fail("train", "boom: fix it")
    raise RuntimeError("train crashed")
"""


def run_stages(log: Path, verbose: bool) -> subprocess.CompletedProcess:
    """Run STAGES_PRINT with its log at `log`."""
    return subprocess.run(
        [sys.executable, "-c", STAGES_PRINT, str(log), "verbose" if verbose else "quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_output_goes_to_the_log_and_the_terminal_gets_the_table(tmp_path):
    done = run_stages(tmp_path / "run.log", verbose=False)
    assert done.returncode == 1
    log = (tmp_path / "run.log").read_text()
    assert "executor input JSON\nfrom a child\nto stderr\n" in log
    assert "RuntimeError" not in log  # raised after the console handed the terminal back
    assert "from a child" not in done.stdout + done.stderr
    said = [re.sub(r"\d+s", "Ns", line) for line in done.stdout.splitlines()[:4]]
    assert said == ["[1/2] prep started", "[1/2] prep finished in Ns: 80 rows",
                    "[2/2] train started", "[2/2] train failed after Ns"]  # fmt: skip
    assert f"Full log: {tmp_path / 'run.log'}" in done.stdout
    assert "StageFailed: stage train failed: boom: fix it\nThe full log: " in done.stderr


def test_verbose_also_streams_the_log_to_the_terminal(tmp_path):
    done = run_stages(tmp_path / "run.log", verbose=True)
    assert "executor input JSON\nfrom a child\nto stderr\n" in done.stdout
    assert "executor input JSON\nfrom a child\nto stderr\n" in (tmp_path / "run.log").read_text()
    assert f"Full log: {tmp_path / 'run.log'}" in done.stdout


@pytest.mark.integration
def test_a_run_prints_the_table_and_the_summary_and_logs_the_rest(tiny_pipeline_run):
    stdout = tiny_pipeline_run.result.stdout
    lines = stdout.splitlines()
    assert len(lines) <= 60, stdout
    ending = lines[-len(SUMMARY) :]
    assert all(map(str.startswith, ending, SUMMARY)), stdout
    log = tiny_pipeline_run.run_dir / "run.log"
    assert f"Full log: {log}" in lines
    assert "Executing task 'prep'" in log.read_text().replace("\x1b[96m", "").replace("\x1b[0m", "")
    assert "Got executor_input" not in stdout + tiny_pipeline_run.result.stderr
    # The table: a row per task, each done, with its one-line result.
    rows = {line.split()[0]: line for line in lines if line.split()[:1] and line[0] != "["
            and line.split()[0] in TASKS}  # fmt: skip
    assert list(rows) == list(TASKS)
    assert all(row.split()[1] == "done" for row in rows.values()), rows
    assert "fingerprint" in rows["prep"]
    assert "strategy" in rows["recommend"]
    assert "best macro_f1" in rows["tune"]
    assert "best checkpoint at step" in rows["train"]
    assert "test split, 16 rows: macro_f1" in rows["evaluate"]
    assert "tiny version 1" in rows["register"]
    assert "promoted" in rows["promote"]


@pytest.mark.integration
def test_a_failing_stage_shows_its_error_and_the_log(tiny_pipeline_config):
    raw = yaml.safe_load(tiny_pipeline_config.read_text())
    raw["data"]["label_column"] = "nope"  # prep refuses it, naming the key
    tiny_pipeline_config.write_text(yaml.safe_dump(raw))
    result = ftpipe("run", "-c", str(tiny_pipeline_config), timeout=600)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "has no column 'nope' (data.label_column)" in result.stderr
    (log,) = Path(raw["pipeline"]["local_root"]).glob("ftpipe-finetune-*/run.log")
    assert f"The full log: {log}" in result.stderr
    assert "Traceback" in log.read_text() and "Traceback" not in result.stderr
    assert [line.split()[:2] for line in result.stdout.splitlines() if line.startswith("prep ")] \
        == [["prep", "failed"]]  # fmt: skip
