"""A sweep leaves no MLflow run RUNNING: trials ASHA stopped end FINISHED, with the reason and
the metrics they logged as they went; the sweep's run shows the space and the best score."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.helpers import train_config
from tests.integration.test_tune import SPACE, SWEEP, run

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_stopped_trials_end_finished_with_metrics_and_the_sweep_run_shows_its_space(
    tmp_path, tiny_model_dir
):
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
        # Stopped or not, a trial's run ends FINISHED with the metrics it reached, live.
        assert trial.info.status == "FINISHED", seen
        assert client.get_metric_history(trial.info.run_id, "eval/loss"), trial.data.metrics
        assert "score" not in trial.data.metrics
        if any(f"_{trial_id}_" in name for name in cut):
            assert trial.data.tags["ftpipe.stop_reason"] == "early_stopped_by_scheduler", seen
        else:
            assert trial.data.tags["ftpipe.stop_reason"] == "completed", seen

    # The sweep's run shows the space it searched, the trials it ran and what won.
    params, metrics = sweep.data.params, client.get_run(sweep.info.run_id).data.metrics
    for path, sampler in SPACE.items():
        assert params[path] == f"searched: {sampler}", params
        assert params[f"tune.search_space.{path}"] == sampler
    assert params["tune.num_trials"] == str(config.tune.num_trials)
    assert metrics["trials"] == 4
    assert metrics["best/loss"] == pytest.approx(results["best_loss"].min())
    best = client.get_run(sweep.info.run_id).data.tags["ftpipe.best_trial_run_id"]
    assert client.get_run(best).data.tags["ftpipe.best_trial"] == "true"
