"""Ray Tune sweeps on a real local Ray: one Ray Train run per trial, ASHA, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ftpipe.config import load_config
from tests.helpers import FTPIPE, REPO, train_config

pytestmark = pytest.mark.integration

# Four learning rates, strong first: the weak ones run later, against the strong ones'
# results at each rung, so ASHA cuts them.
SPACE = {"train.lr": "choice([3.0e-3, 1.0e-3, 1.0e-6, 1.0e-7])"}
SWEEP = (
    "tune.search=grid", "tune.num_trials=1", "tune.max_concurrent_trials=2",
    "tune.grace_period=1", "tune.reduction_factor=2", "train.metric=loss", "train.epochs=4",
)  # fmt: skip


def sweep_config(tmp_path: Path, model_dir: Path):
    config = train_config(tmp_path, model_dir, *SWEEP, f"tune.output_dir={tmp_path / 'tune'}")
    raw = config.model_dump(mode="json")
    raw["tune"]["search_space"] = SPACE
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([*FTPIPE, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


@pytest.mark.slow
def test_asha_stops_weak_trials_and_the_best_config_is_the_best_reported(tmp_path, tiny_model_dir):
    path = sweep_config(tmp_path, tiny_model_dir)
    done = run("tune", "-c", str(path))
    output, _ = done.communicate(timeout=900)
    assert done.returncode == 0, output[-4000:]

    sweep = next((tmp_path / "tune").glob("sweep-*"))
    results = pd.read_csv(sweep / "results.csv")
    assert len(results) == 4
    assert (results["stop_reason"] == "stopped by ASHA").any(), results.to_string()
    assert (results["stop_reason"] == "completed").any(), results.to_string()
    # The best config is the trial with the lowest loss any trial reported.
    best_row = results.loc[results["best_loss"].idxmin()]
    best = load_config(sweep / "best.yaml")
    assert best.train.lr == pytest.approx(best_row["train.lr"])
    summary = json.loads((sweep / "best.json").read_text())
    assert summary["best"] == pytest.approx(best_row["best_loss"])
    assert (sweep / "metric_vs_lr.png").stat().st_size > 1000
    assert (sweep / "trials.png").stat().st_size > 1000
    assert (sweep / "model" / "ftpipe.json").exists()  # tune.final=reuse exported the best


def completed_trials(sweep_root: Path) -> dict[str, int]:
    """Trial directory name to its number of reported results, for trials that finished."""
    finished = {}
    for result_file in sweep_root.glob("sweep-*/*/result.json"):
        lines = [json.loads(line) for line in result_file.read_text().splitlines() if line]
        if lines and lines[-1].get("done"):
            finished[result_file.parent.name] = len(lines)
    return finished


@pytest.mark.slow
def test_a_resumed_sweep_does_not_rerun_finished_trials(tmp_path, tiny_model_dir):
    path = sweep_config(tmp_path, tiny_model_dir)
    first = run("tune", "-c", str(path), "tune.max_concurrent_trials=1")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not completed_trials(tmp_path / "tune"):
        time.sleep(0.5)
    before = completed_trials(tmp_path / "tune")
    assert before, "no trial finished before the deadline"
    first.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves its state and stops
    first.communicate(timeout=300)

    resumed = run("tune", "-c", str(path), "tune.max_concurrent_trials=1", "--resume")
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output[-4000:]
    results = pd.read_csv(next((tmp_path / "tune").glob("sweep-*/results.csv")))
    assert len(results) == 4 and not results["stop_reason"].str.startswith("error").any()
    after = completed_trials(tmp_path / "tune")
    for trial, reports in before.items():
        assert after[trial] == reports, f"{trial} was run again"
