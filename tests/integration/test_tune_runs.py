"""A sweep leaves no MLflow run RUNNING: trials ASHA stopped are ended, with the reason."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.helpers import train_config
from tests.integration.test_tune import SPACE, SWEEP, run

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_trials_stopped_by_asha_are_ended_with_a_stop_reason(tmp_path, tiny_model_dir):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("sweeps", artifact_location=str(tmp_path / "artifacts"))
    config = train_config(
        tmp_path, tiny_model_dir, *SWEEP, f"tune.output_dir={tmp_path / 'tune'}",
        f"registry.tracking_uri={uri}", "registry.experiment_name=sweeps",
        "registry.log_system_metrics=false", "tune.final=none",
    )  # fmt: skip
    raw = config.model_dump(mode="json")
    raw["tune"]["search_space"] = SPACE
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))

    done = run("tune", "-c", str(path))
    output, _ = done.communicate(timeout=900)
    assert done.returncode == 0, output[-4000:]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweeps").experiment_id
    runs = client.search_runs([experiment])
    sweep = next(r for r in runs if r.info.run_name.startswith("sweep-"))
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    assert len(trials) == 4
    statuses = {r.info.run_id: r.info.status for r in runs}
    assert "RUNNING" not in statuses.values(), statuses
    assert all(r.info.end_time for r in runs)
    results = pd.read_csv(next((tmp_path / "tune").glob("sweep-*/results.csv")))
    cut = [name for name, why in zip(results["trial"], results["stop_reason"], strict=True)
           if why == "stopped by ASHA"]  # fmt: skip
    assert cut, results.to_string()
    seen = [(r.info.status, r.data.tags.get("ftpipe.stop_reason")) for r in trials]
    for trial in trials:
        trial_id = trial.data.tags["ftpipe.tune_trial_id"]
        if any(f"_{trial_id}_" in name for name in cut):
            assert trial.info.status == "KILLED", seen
            assert trial.data.tags["ftpipe.stop_reason"] == "early_stopped_by_scheduler", seen
        else:
            assert trial.info.status == "FINISHED", seen
