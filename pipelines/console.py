"""What `ftpipe run` shows: one table of the stages, while everything else goes to a log file.

A run's stages, the libraries they use and the KFP local runner print a great deal (executor
input JSON, weight-loading reports, Ray's and MLflow's notices). `RunConsole` sends all of it,
from this process and every process it starts, to a log file: it points file descriptors 1 and
2 at the file, so subprocesses inherit it. The terminal gets a `Board`: one row per stage with
its state, duration and one-line result (pipelines/results.py), redrawn in place on a terminal.
Where the output is not a terminal (a pipe, a CI log, a Ray job's driver log), nothing is
redrawn: each start and end prints one line, and the table prints once at the end. With
`verbose`, the log streams to the terminal too.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ftpipe.errors import FtpipeError

LOG = "run.log"
"""The log's name in the run's directory."""

POLL_S = 0.2
"""How often the log is read for new lines."""

STYLES = {"waiting": "dim", "running": "bold yellow", "cached": "cyan", "done": "green",
          "failed": "bold red", "skipped": "dim"}  # fmt: skip
"""Each state a stage can be in, and how its name shows."""


class StageFailed(FtpipeError):
    """A stage of `ftpipe run` failed: its error paragraph and where the full log is."""


@dataclass
class _Row:
    """One stage's row: its state, when it started and ended, and its result line."""

    state: str = "waiting"
    started: float | None = None
    ended: float | None = None
    result: str = ""


class Board:
    """The stages of one run: their states, durations and one-line results.

    The runners report events (`start`, `finish`, `fail`) from any thread; rich renders the
    board as a table (`__rich__`) whenever it redraws. Events for names that are not stages
    (a KFP condition's sub-DAG) are ignored.

    Attributes:
        log: The log file, named under the table.
        failure: The stage that failed and its error paragraph, once one has.
        say: Receives one line per event (a start, an end), or None where the table is live.
    """

    def __init__(self, stages: Sequence[str], clock: Callable[[], float] = time.monotonic):
        self._rows = {name: _Row() for name in stages}
        self._clock = clock
        self._lock = threading.Lock()
        self.log: Path | None = None
        self.failure: tuple[str, str] | None = None
        self.say: Callable[[str], None] | None = None

    def start(self, stage: str) -> None:
        """`stage` is running."""
        self._update(stage, "running", started=self._clock())

    def finish(self, stage: str, result: str = "", state: str = "done") -> None:
        """`stage` ended well (`state` "done", or "cached" where a cache replayed it)."""
        self._update(stage, state, ended=self._clock(), result=result)

    def fail(self, stage: str, error: str) -> None:
        """`stage` failed with `error`, the paragraph a person reads."""
        with self._lock:
            if self.failure is None:
                self.failure = (stage, error)
        first = error.strip().splitlines()[0] if error.strip() else "failed"
        self._update(stage, "failed", ended=self._clock(), result=first)

    def skip_waiting(self, result: str = "") -> None:
        """Mark every stage that never started as skipped (the run ended without it)."""
        for name, row in self._rows.items():
            if row.state == "waiting":
                self._update(name, "skipped", result=result)

    def _update(self, stage: str, state: str, **changes: float | str) -> None:
        row = self._rows.get(stage)
        if row is None:
            return
        with self._lock:
            row.state = state
            for key, value in changes.items():
                setattr(row, key, value)
            line = self._line(stage, row)
        if self.say is not None and line:
            self.say(line)

    def _line(self, stage: str, row: _Row) -> str:
        """The one line an event prints where the table is not live."""
        step = f"[{list(self._rows).index(stage) + 1}/{len(self._rows)}] {stage}"
        if row.state == "running":
            return f"{step} started"
        if row.state == "failed":
            return f"{step} failed after {self._seconds(row)}"
        said = {"done": f"{step} finished in {self._seconds(row)}", "cached": f"{step} cached"}
        if row.state not in said:
            return ""
        return said[row.state] + (f": {row.result}" if row.result else "")

    def _seconds(self, row: _Row) -> str:
        if row.started is None:
            return ""
        return f"{(row.ended or self._clock()) - row.started:.0f}s"

    def __rich__(self) -> Group:
        """The table, one row per stage, and the log's path under it."""
        table = Table(box=None, pad_edge=False, show_edge=False)
        # One line per stage: a narrow terminal cuts the result, never the other columns.
        table.add_column("stage", no_wrap=True, min_width=max(map(len, self._rows)))
        table.add_column("state", no_wrap=True, min_width=max(map(len, STYLES)))
        table.add_column("time", no_wrap=True, min_width=5, justify="right")
        table.add_column("result", no_wrap=True, overflow="ellipsis")
        with self._lock:
            for name, row in self._rows.items():
                style = STYLES[row.state]
                table.add_row(Text(name, style=style), Text(row.state, style=style),
                              self._seconds(row), row.result)  # fmt: skip
        return Group(table, *([Text(f"Full log: {self.log}")] if self.log else []))


class RunConsole:
    """Sends this process's output (and its children's) to a log file; shows the board.

    Use as a context manager around the run. Standard output and error are restored on exit,
    after the final table has been printed.

    Args:
        board: The stages' table.
        log: Where the log starts (`keep_log_in` may move it into the run's directory).
        verbose: Also stream the log to the terminal (the table then prints at the end).
        on_line: Receives every line of the log, as it is written (the KFP runner's watcher).
    """

    def __init__(self, board: Board, log: Path, verbose: bool = False,
                 on_line: Callable[[str], None] | None = None):  # fmt: skip
        self.board = board
        self.verbose = verbose
        self._on_line = on_line
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._stop = threading.Event()
        self._saved: tuple[int, int] = (-1, -1)
        self._terminal: Console | None = None
        self._live: Live | None = None
        self._tail: threading.Thread | None = None

    @property
    def terminal(self) -> Console:
        """The console on the terminal (standard output as it was before the run)."""
        if self._terminal is None:
            raise RuntimeError("the run's console is not open")
        return self._terminal

    def keep_log_in(self, run_dir: Path) -> None:
        """Move the log into the run's directory, once it exists (writers keep writing)."""
        target = run_dir / LOG
        if self.log != target:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.log = self.log.replace(target)
            self.board.log = self.log

    def __enter__(self) -> RunConsole:
        sys.stdout.flush()
        sys.stderr.flush()
        self._line_buffering = sys.stdout.line_buffering
        descriptor = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._saved = (os.dup(1), os.dup(2))
        terminal = os.fdopen(os.dup(self._saved[0]), "w", encoding="utf-8", errors="replace")
        self._terminal = Console(file=terminal, markup=False, highlight=False, soft_wrap=True)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        os.close(descriptor)
        # Lines reach the log as they are printed, so the watcher sees each stage's end.
        sys.stdout.reconfigure(line_buffering=True)
        self.board.log = self.log
        live = self.terminal.is_terminal and not self.terminal.is_dumb_terminal
        if live and not self.verbose:
            self._live = Live(self.board, console=self.terminal, refresh_per_second=4,
                              redirect_stdout=False, redirect_stderr=False)  # fmt: skip
            self._live.start(refresh=True)
        else:
            self.board.say = self.terminal.print
        self._tail = threading.Thread(target=self._follow, name="ftpipe-run-log", daemon=True)
        self._tail.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        sys.stdout.flush()
        sys.stderr.flush()
        self._stop.set()
        if self._tail is not None:
            self._tail.join()
        self.board.say = None
        self.board.skip_waiting()  # whatever has not started by now never will
        if self._live is not None:
            self._live.stop()  # draws the final table
        else:
            self.terminal.print(self.board)
        sys.stdout.reconfigure(line_buffering=self._line_buffering)
        for saved, target in zip(self._saved, (1, 2), strict=True):
            os.dup2(saved, target)
            os.close(saved)
        self.terminal.file.close()

    def _follow(self) -> None:
        """Read the log as it grows: hand each line on, and echo it when verbose."""
        with open(self.log, "rb") as log:  # follows the file when it is moved
            pending = b""
            while True:
                stopping = self._stop.is_set()  # read once more after the run ends
                chunk = log.read()
                if chunk:
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        self._take(line.decode("utf-8", errors="replace"))
                elif stopping:
                    break
                else:
                    time.sleep(POLL_S)
            if pending:
                self._take(pending.decode("utf-8", errors="replace"))

    def _take(self, line: str) -> None:
        if self.verbose:
            self.terminal.file.write(line + "\n")
            self.terminal.file.flush()
        if self._on_line is not None:
            self._on_line(line)


@contextmanager
def showing(board: Board, log: Path, verbose: bool = False,
            on_line: Callable[[str], None] | None = None) -> Iterator[RunConsole]:  # fmt: skip
    """Run the block under a `RunConsole`; a stage's failure ends it as one paragraph.

    Args:
        board: The stages' table, which the block's runner keeps up to date.
        log: Where the log starts (see `RunConsole`).
        verbose: Also stream the log to the terminal.
        on_line: Receives every line of the log.

    Yields:
        The console, whose `keep_log_in` moves the log into the run's directory.

    Raises:
        StageFailed: A stage failed: its error paragraph and the log's path.
    """
    console = RunConsole(board, log, verbose, on_line)
    try:
        with console:
            yield console
    except Exception as exc:
        if board.failure is None:
            raise
        stage, error = board.failure
        raise StageFailed(f"stage {stage} failed: {error}\nThe full log: {console.log}") from exc
