"""The whole DAG through the real KFP local runner, local Ray and MLflow on sqlite."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

import pytest
from mlflow import MlflowClient

from ftpipe.train.export import Export
from tests.helpers import ftpipe
from tests.integration.test_registry_server import mlflow_server

pytestmark = pytest.mark.integration


def test_run_registers_with_lineage_and_promotes_on_the_gate_then_a_rerun_hits_the_cache(
    tiny_pipeline_run,
):
    run = tiny_pipeline_run
    config, first, root = run.config, run.result, run.run_dir
    # Every stage ran and left its outputs (the runner raises on any failed stage).
    for task in ("identify", "prep", "recommend", "tune", "train", "evaluate", "register",
                 "promote"):  # fmt: skip
        assert (root / task).is_dir(), sorted(p.name for p in root.iterdir())

    client = MlflowClient(config.registry.tracking_uri)
    version = client.get_model_version("tiny", "1")
    lineage = ("config_hash", "data_fingerprint", "base_model", "git_commit", "version.torch",
               "version.transformers", "version.ftpipe")  # fmt: skip
    for tag in lineage:
        assert version.tags.get(f"ftpipe.{tag}"), sorted(version.tags)
    prepared = json.loads((root / "prep/prepared/fingerprint.json").read_text())
    assert version.tags["ftpipe.data_fingerprint"] == prepared["fingerprint"]
    # The pipeline run that registered it: locally, the run's name (its artifacts directory).
    assert version.tags["ftpipe.pipeline_run_id"] == root.name
    # The first version has no champion to beat: the gate promotes it, and the alias says so.
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"
    # It decided on the test split, which neither the sweep nor training selected on.
    assert version.tags["ftpipe.gate.split"] == "test"
    assert "on the test split" in version.description
    assert "optimistic" not in version.description
    assert "version 1 (alias challenger): PROMOTED to champion" in first.stdout
    assert "mlflow ui --backend-store-uri" in first.stdout

    # Same config and data: every stage up to evaluation replays from the cache, and the same
    # export registers as the same version (registration is idempotent), still the champion.
    second = ftpipe("run", "-c", str(run.config_path), timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-6000:]
    log = second.stdout + second.stderr
    for task in ("prep", "recommend", "tune", "train", "evaluate"):
        assert f"] {task} cached" in log, log[-3000:]
    assert "version 1 (alias challenger): already champion" in second.stdout
    assert [str(v.version) for v in client.search_model_versions("name='tiny'")] == ["1"]
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"


def test_mlflow_shows_live_curves_finished_trials_and_a_linked_described_version(
    tiny_pipeline_run, tmp_path
):
    """What a person finds in MLflow after a run, read over a real server's REST API."""
    config = tiny_pipeline_run.config
    with mlflow_server(config.registry.tracking_uri, tmp_path) as url:
        api = _Api(url)
        experiment = api.get("experiments/get-by-name",
                             experiment_name=config.registry.experiment_name)  # fmt: skip
        runs = api.post("runs/search", experiment_ids=[experiment["experiment"]["experiment_id"]],
                        max_results=1000)["runs"]  # fmt: skip
        by_id = {r["info"]["run_id"]: r for r in runs}
        tags = {run_id: _pairs(r["data"].get("tags")) for run_id, r in by_id.items()}
        metrics = {run_id: _pairs(r["data"].get("metrics")) for run_id, r in by_id.items()}
        for run_id, logged in metrics.items():
            assert "score" not in logged, (by_id[run_id]["info"]["run_name"], sorted(logged))

        # The sweep's run shows the space it searched and what won; every trial finished.
        (sweep,) = [i for i, t in tags.items() if "ftpipe.best_trial_id" in t]
        params = _pairs(by_id[sweep]["data"].get("params"))
        assert params["train.lr"] == "searched: choice([3.0e-3])", params
        assert params["tune.search_space.train.lr"] == "choice([3.0e-3])"
        assert params["tune.num_trials"] == "1" and metrics[sweep]["trials"] == 1
        trials = [i for i, t in tags.items() if t.get("mlflow.parentRunId") == sweep]
        assert len(trials) == 1
        for trial in trials:
            assert by_id[trial]["info"]["status"] == "FINISHED"
            assert tags[trial]["ftpipe.stop_reason"] == "completed"
            assert any(k.startswith("eval/") for k in metrics[trial]), metrics[trial]

        version = api.get("model-versions/get", name="tiny", version="1")["model_version"]
        training = version["run_id"]
        # The training run trains the best trial's config, and they name each other.
        assert tags[training]["ftpipe.tune_trial_id"] == tags[sweep]["ftpipe.best_trial_id"]
        assert tags[training]["ftpipe.sweep_run_id"] == sweep
        assert tags[trials[0]]["ftpipe.trained_by_run_id"] == training
        assert tags[training]["ftpipe.model_version"] == "tiny/1"

        # Live curves: evaluations at each epoch end, training loss and learning rate by step.
        history = api.get("metrics/get-history", run_id=training, metric_key="eval/macro_f1")
        assert len({m["step"] for m in history["metrics"]}) >= 3, history
        for key in ("train/loss", "train/lr", "train/grad_norm"):
            assert api.get("metrics/get-history", run_id=training, metric_key=key)["metrics"]
        # The summary is the exported model's, not the last evaluation's.
        exported = Export.open(tiny_pipeline_run.run_dir / "train" / "model").metrics
        assert metrics[training]["best/macro_f1"] == pytest.approx(exported["macro_f1"])
        assert "macro_f1" not in metrics[training]
        assert any(k.startswith("test/") for k in metrics[training]), sorted(metrics[training])
        assert params_of(api, training)["strategy"] == tags[training]["ftpipe.strategy"]

        # The version is linked to its logged model, which shows it as registered. (A SQL
        # registry keeps no model_id column: the source URI names the logged model.)
        assert version["source"].startswith("models:/m-"), version
        model_id = version.get("model_id") or version["source"].removeprefix("models:/")
        model = api.get(f"logged-models/{model_id}")["model"]["info"]
        assert model["source_run_id"] == training
        listed = json.loads(_pairs(model["tags"])["mlflow.modelVersions"])
        assert {"name": "tiny", "version": "1"} in [
            {k: str(v) for k, v in e.items()} for e in listed
        ]
        # The gate's decision: one sentence, three short tags, and a Markdown page of evidence.
        assert version["description"].startswith("Promoted to champion by gate decision 1")
        gate = _pairs(version["tags"])
        assert gate["ftpipe.gate.decision"] == "promoted"
        assert gate["ftpipe.gate.metric"] == "macro_f1"
        assert gate["ftpipe.gate.ci"].startswith("[")
        assert not any(v.startswith(("{", "[{")) for v in gate.values()), gate
        evidence = gate["ftpipe.gate.evidence"].removeprefix(f"runs:/{training}/")
        files = api.get("artifacts/list", run_id=training, path="gate")["files"]
        assert [f["path"] for f in files] == [evidence]
        page = api.raw("get-artifact", path=evidence, run_uuid=training)
        assert page.startswith("# Promotion gate: tiny version 1, promoted to champion")


def params_of(api: _Api, run_id: str) -> dict[str, str]:
    """A run's parameters."""
    return _pairs(api.get("runs/get", run_id=run_id)["run"]["data"]["params"])


def _pairs(entries: list[dict[str, Any]] | None) -> dict[str, Any]:
    """MLflow's REST lists of {key, value} as a dict."""
    return {e["key"]: e["value"] for e in entries or []}


class _Api:
    """Plain HTTP calls to an MLflow server's REST API, as the UI makes them."""

    def __init__(self, url: str):
        self.url = url

    def get(self, endpoint: str, **query: Any) -> dict[str, Any]:
        return json.loads(self.raw(f"api/2.0/mlflow/{endpoint}", **query))

    def post(self, endpoint: str, **body: Any) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/{endpoint}", json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def raw(self, endpoint: str, **query: Any) -> str:
        address = f"{self.url}/{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(address, timeout=30) as response:
            return response.read().decode()
