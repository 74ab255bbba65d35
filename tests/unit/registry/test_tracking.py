"""Tracking and registration against a real MLflow SQLite store."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from ftpipe.config import config_hash
from ftpipe.errors import FtpipeError
from ftpipe.registry.client import scoped_mlflow
from ftpipe.registry.tracking import TrainingRun, log_evaluation
from ftpipe.registry.versions import register
from ftpipe.stages.evaluate import evaluate_model, load_heldout
from ftpipe.stages.predict import resolve_model
from ftpipe.train.export import Export
from ftpipe.train.local import train_local
from ftpipe.train.outcome import read_record
from ftpipe.train.predictor import Predictor
from tests.helpers import train_config
from tests.unit.registry.helpers import with_registry

LONG_SAMPLER = "choice([" + ", ".join(f"{i}e-6" for i in range(1, 120)) + "])"
TEXTS = ["good hello help please", "bad late crash twice", "refund please", "charged twice"]


def test_a_training_run_logs_params_lineage_metrics_and_artifacts(
    tmp_path, tiny_model_dir, tracking_uri, model_name, monkeypatch
):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    monkeypatch.setenv("FTPIPE_PIPELINE_RUN_ID", "pipeline-42")
    base = train_config(
        tmp_path, tiny_model_dir, f"tune.search_space={{train.lr: '{LONG_SAMPLER}'}}"
    )
    config = with_registry(base, tracking_uri, model_name, "registry.log_system_metrics=true")

    client = MlflowClient(tracking_uri)
    seen: list[tuple[int, set[str]]] = []

    def watch(metrics: dict, step: int) -> None:
        """The live sink, checked in the store at each call: logged there as it happens."""
        live(metrics, step)
        for key in metrics:
            assert step in {m.step for m in client.get_metric_history(run.run_id, key)}, key
        seen.append((step, set(metrics)))

    with TrainingRun(config, deepspeed_config={"zero_optimization": {"stage": 0}}) as run:
        live = pickle.loads(pickle.dumps(run.live()))  # as a Ray worker receives it
        outcome = train_local(config, on_metrics=watch)
        run.log_summary(outcome.metrics)

    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    tags, params = logged.data.tags, logged.data.params
    fingerprint = json.loads((tmp_path / "prep" / "fingerprint.json").read_text())["fingerprint"]
    assert tags["ftpipe.config_hash"] == config_hash(config)
    assert tags["ftpipe.data_fingerprint"] == fingerprint
    assert tags["ftpipe.base_model"] == str(tiny_model_dir)
    assert tags["ftpipe.base_model_revision"].startswith("sha256:")
    assert tags["ftpipe.pipeline_run_id"] == "pipeline-42"
    assert tags["ftpipe.tune_trial_id"] == "none"
    assert tags["ftpipe.version.torch"] and tags["ftpipe.git_commit"]
    # The flattened config, with the over-long value moved to an artifact.
    assert params["train.lr"] == str(config.train.lr)
    assert params["data.max_length"] == "16"
    assert "artifact params/tune.search_space.train.lr.json" in params["tune.search_space.train.lr"]
    artifact = client.download_artifacts(run.run_id, "params/tune.search_space.train.lr.json")
    assert json.loads(Path(artifact).read_text())["value"] == LONG_SAMPLER
    assert json.loads(params["labels.id2label"]) == {"0": "bad", "1": "good"}
    files = {a.path for a in client.list_artifacts(run.run_id, "prep")}
    assert {"prep/stats.json", "prep/label_map.json", "prep/fingerprint.json"} <= files
    assert "deepspeed.json" in {a.path for a in client.list_artifacts(run.run_id)}
    # Evaluations at their steps (each epoch end here), training curves every
    # train.log_every_steps, and the machine's.
    losses = client.get_metric_history(run.run_id, "eval/loss")
    assert len(losses) == config.train.epochs and sorted(m.step for m in losses)[0] > 0
    assert {m.step for m in client.get_metric_history(run.run_id, "eval/f1/good")} == {
        m.step for m in losses
    }
    every = config.train.log_every_steps
    for key in ("train/loss", "train/lr", "train/grad_norm"):
        steps = [m.step for m in client.get_metric_history(run.run_id, key)]
        assert steps and all(s % every == 0 for s in steps[:-1]), (key, steps)
    assert [step for step, keys in seen if "eval/loss" in keys] == sorted(m.step for m in losses)
    assert any(key.startswith("system/") for key in logged.data.metrics)
    # The summary is the exported model's; the ranking score and the last epoch's metrics
    # are not logged under the plain names.
    exported = Export.open(outcome.model_dir).metrics
    assert logged.data.metrics["best/accuracy"] == pytest.approx(exported["accuracy"])
    assert not {"score", "accuracy", "best", "exported"} & set(logged.data.metrics)
    assert (params["strategy"], params["lr"]) == ("full", str(config.train.lr))
    assert "config.json" in {a.path for a in client.list_artifacts(run.run_id)}
    assert not any(key.startswith("pipeline.") for key in params)
    assert read_record(config.train.output_dir) == {
        "run_id": run.run_id, "status": "FINISHED", "tracking_uri": tracking_uri,
        "experiment_name": config.registry.experiment_name,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")]
)
def test_a_failed_or_cancelled_run_never_registers_anything(
    trained, tmp_path, tracking_uri, model_name, error, status
):
    config, model_dir = trained("full")
    config = with_registry(config, tracking_uri, model_name)
    with pytest.raises(error), TrainingRun(config, record_dir=tmp_path) as run:
        raise error("worker died")

    client = MlflowClient(tracking_uri)
    assert client.get_run(run.run_id).info.status == status
    assert read_record(tmp_path)["status"] == status
    with pytest.raises(FtpipeError, match=f"is {status}: a failed or cancelled run never"):
        register(config, model_dir, run_id=run.run_id)
    assert client.search_registered_models(f"name = '{model_name}'") == []
    experiment = client.get_run(run.run_id).info.experiment_id
    logged = client.search_logged_models(
        [experiment], filter_string=f"source_run_id = '{run.run_id}'"
    )
    assert logged == []


def test_tune_trials_are_nested_runs_under_the_sweep(trained, tmp_path, tracking_uri, model_name):
    config = with_registry(trained("full")[0], tracking_uri, model_name)
    with TrainingRun(config, run_name="sweep", record_dir=tmp_path) as sweep:
        for trial in ("trial_0", "trial_1"):
            with TrainingRun(config, parent_run_id=sweep.run_id, tune_trial_id=trial) as run:
                run.log_metrics({"accuracy": 0.5, "step": 1})

    client = MlflowClient(tracking_uri)
    children = client.search_runs(
        [client.get_run(sweep.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{sweep.run_id}'",
    )
    assert sorted(r.data.tags["ftpipe.tune_trial_id"] for r in children) == ["trial_0", "trial_1"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert client.get_run(sweep.run_id).data.tags["ftpipe.tune_trial_id"] == "none"
    # Tune's verdict reaches the trials that closed their runs themselves too, as a reason.
    assert sweep.end_child_runs({"trial_0": ("FINISHED", "completed")}) == []
    again = [client.get_run(r.info.run_id).data.tags for r in children]
    reasons = {t["ftpipe.tune_trial_id"]: t.get("ftpipe.stop_reason") for t in again}
    assert reasons == {"trial_0": "completed", "trial_1": None}


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_the_registered_model_loads_back_and_predicts_like_the_export(
    trained, tmp_path, tracking_uri, model_name, strategy
):
    config, model_dir = trained(strategy)
    config = with_registry(config, tracking_uri, model_name)
    with TrainingRun(config, record_dir=tmp_path) as run:
        pass
    predictor = Predictor.load(model_dir)
    evaluation = evaluate_model(
        predictor, load_heldout(config.data.output_dir), tmp_path / "eval", str(model_dir)
    )
    evaluation.run_id = log_evaluation(evaluation, config, run.run_id)

    version = register(config, model_dir, run_id=run.run_id, evaluation=evaluation)

    client = MlflowClient(tracking_uri)
    challenger = client.get_model_version_by_alias(model_name, "challenger")
    assert str(version.version) == str(challenger.version) == "1"
    tags = client.get_model_version(model_name, "1").tags
    run_tags = client.get_run(run.run_id).data.tags
    for key in ("config_hash", "data_fingerprint", "base_model_revision", "git_commit",
                "version.transformers", "pipeline_run_id", "tune_trial_id"):  # fmt: skip
        assert tags[f"ftpipe.{key}"] == run_tags[f"ftpipe.{key}"], key
    assert tags["ftpipe.eval.fingerprint"] == evaluation.fingerprint
    assert float(tags["ftpipe.eval.accuracy"]) == pytest.approx(evaluation.metrics["accuracy"])
    assert tags["ftpipe.model_kind"] == ("peft" if strategy == "lora" else "transformers")

    uri = f"models:/{model_name}@challenger"
    with scoped_mlflow(tracking_uri):  # MLflow loads models through its global URIs only
        info = mlflow.models.get_model_info(uri)
        served = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": TEXTS}))
    assert info.signature.inputs.input_names() == ["text"]
    assert "prob_good" in info.signature.outputs.input_names()
    assert info.saved_input_example_info is not None
    local = predictor.frame(predictor.probabilities(TEXTS))
    assert served["label"].tolist() == local["label"].tolist()
    pd.testing.assert_frame_equal(served, local, atol=1e-4, check_dtype=False)

    downloaded = resolve_model(uri, tracking_uri)
    # The temperature travels with the logged model: served probabilities are calibrated.
    assert Export.open(downloaded).temperature == predictor.temperature != 1.0
    if strategy == "lora":  # the adapter alone, on the base model the manifest names
        assert not (downloaded / "model.safetensors").exists()
        assert (downloaded / "adapter" / "adapter_model.safetensors").exists()
        manifest = json.loads((downloaded / "ftpipe.json").read_text())
        assert manifest["kind"] == "peft" and manifest["base_model"] == config.model.name
    again = Predictor.load(downloaded)
    assert again.frame(again.probabilities(TEXTS))["label"].tolist() == local["label"].tolist()


def test_credentials_in_the_tracking_uri_are_refused():
    from ftpipe.config import RegistryConfig
    from ftpipe.errors import ConfigError
    from ftpipe.registry.client import connect

    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_USERNAME"):
        connect(RegistryConfig(tracking_uri="https://alice:secret@mlflow.example.com"))
