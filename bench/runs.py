"""Benchmarks that run ftpipe's commands as a user would, on one config, in one work dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FTPIPE = str(Path(sys.executable).with_name("ftpipe"))


class Bench:
    """Runs ftpipe commands on one config, everything under one work dir.

    A step whose output is already in the work dir (from an interrupted run, `--workdir`) is
    not run again; each step's wall seconds are kept in timings.json.
    """

    def __init__(self, workdir: Path, config: str, train_rows: int | None) -> None:
        self.workdir, self.config = workdir, config
        self.base = [
            f"data.output_dir={workdir / 'prep'}",
            f"recommend.output_dir={workdir / 'recommend'}",
            f"train.cache_dir={workdir / 'cache'}",
            f"registry.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
            *([f"data.max_train_rows={train_rows}"] if train_rows else []),
        ]
        self.timings_file = workdir / "timings.json"
        self.timings = (
            json.loads(self.timings_file.read_text()) if self.timings_file.exists() else {}
        )

    @classmethod
    def prepped(
        cls, config: str, data: str, workdir: Path | None, train_rows: int | None, prefix: str
    ) -> Bench:
        """A bench on `config` whose data (`data`, under ../shared/data) is prepped.

        Exits with a message if the shared data is missing. Without `workdir` the bench gets
        a new temporary one; with it, a kept prep there is reused.
        """
        if not (REPO.parent / "shared" / "data" / data).exists():
            sys.exit(f"{data} not found under ../shared/data; this benchmark needs it.")
        workdir = workdir or Path(tempfile.mkdtemp(prefix=prefix))
        bench = cls(workdir, config, train_rows)
        bench.step("prep", workdir / "prep" / "stats.json", "prep")
        return bench

    def step(self, name: str, done: Path, command: str, *overrides: str) -> None:
        """Run `ftpipe command` unless `done` exists; record its wall seconds as `name`."""
        if done.exists():
            print(f"{name}: reusing {done}", flush=True)
            return
        started = time.perf_counter()
        subprocess.run(
            [FTPIPE, command, "-c", self.config, *self.base, *overrides],
            cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True,
        )  # fmt: skip
        self.timings[name] = time.perf_counter() - started
        self.timings_file.write_text(json.dumps(self.timings, indent=2) + "\n")

    def train(self, name: str, *overrides: str) -> dict:
        """Train into workdir/name; return result.json with `seconds` (None if not timed) and
        the run's `name`."""
        result = self.workdir / name / "result.json"
        self.step(name, result, "train", f"train.output_dir={self.workdir / name}", *overrides)
        return json.loads(result.read_text()) | {"seconds": self.timings.get(name), "name": name}

    def score_on_test(self, name: str) -> dict:
        """`ftpipe evaluate` on the config's test split; return metrics.json."""
        out = self.workdir / name / "evaluate"
        self.step(
            f"{name}/evaluate", out / "metrics.json", "evaluate",
            f"train.output_dir={self.workdir / name}", f"evaluate.output_dir={out}",
        )  # fmt: skip
        return json.loads((out / "metrics.json").read_text())


def minutes(seconds: float | None) -> str:
    """Wall minutes of a step, or why there are none."""
    return "not timed (reused)" if seconds is None else f"{seconds / 60:.1f} min"
