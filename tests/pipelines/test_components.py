"""Each component's Python function, called directly on tiny inputs, in DAG order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model
from mlflow import MlflowClient

from components.evaluate import evaluate
from components.prep import identify, prep
from components.recommend import recommend
from components.register import promote, register
from components.train import train
from components.tune import tune
from ftpipe.config import load_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("own_ray")]


def test_identify_keys_on_the_data_bytes_and_the_config(tiny_pipeline_config):
    text = tiny_pipeline_config.read_text()
    first = identify(text)
    assert identify(str(tiny_pipeline_config)) == first  # a path means its contents
    data = load_config(tiny_pipeline_config).data.train
    with open(data, "a") as handle:
        handle.write("one more good row,good\n")
    changed = identify(text)
    assert changed.data_fingerprint != first.data_fingerprint
    assert changed.config_hash == first.config_hash
    raw = yaml.safe_load(text)
    raw["seed"] = 8
    assert identify(yaml.safe_dump(raw)).config_hash != first.config_hash


@pytest.mark.slow
def test_every_component_runs_directly_in_dag_order(tmp_path, tiny_pipeline_config):
    config = tiny_pipeline_config.read_text()
    uri = load_config(tiny_pipeline_config).registry.tracking_uri
    out = tmp_path / "artifacts"
    out.mkdir()

    def artifact(kind, name):
        return kind(name=name, uri=str(out / name))

    def page(report):
        """A report the component wrote: HTML, in a file named so (KFP UI and browsers)."""
        assert report.uri.endswith(".html")
        return Path(report.path).read_text()

    ids = identify(config)
    prepared, prep_report = artifact(Dataset, "prepared"), artifact(HTML, "prep")
    prep(config, ids.data_fingerprint, prepared, prep_report)
    assert prepared.metadata["fingerprint"] == ids.data_fingerprint
    rows = {split: prepared.metadata[f"{split}_rows"] for split in ("train", "eval", "test")}
    assert sum(rows.values()) == 80 and rows["test"] == 16  # the test split travels with it
    assert "<td>good</td>" in page(prep_report)

    rec = artifact(Artifact, "rec")
    rec_report = artifact(HTML, "rec-report")
    strategy = recommend(config, prepared, rec, rec_report)
    assert strategy == json.loads((out / "rec/recommendation.json").read_text())["strategy"]
    assert f"Strategy: {strategy}" in page(rec_report)

    best, results = artifact(Artifact, "best.yaml"), artifact(Dataset, "results.csv")
    sweep_html = artifact(HTML, "sweep-report")
    tune(config, ids.config_hash, "", uri, prepared, rec, artifact(Artifact, "sweep"),
         best, results, sweep_html)  # fmt: skip
    best_config = load_config(out / "best.yaml")
    assert best_config.train.lr == pytest.approx(3e-3)  # the one point of the space
    assert best_config.strategy.name == strategy  # auto resolved to the recommendation
    assert "<img" in page(sweep_html) and "completed" in page(sweep_html)

    model, metrics = artifact(Model, "train/model"), artifact(Metrics, "metrics")
    run_id = train(best, "", uri, prepared, rec, model, metrics).run_id
    assert (out / "train/model/ftpipe.json").is_file()
    assert model.metadata["strategy"] == strategy
    assert 0.0 <= metrics.metadata["accuracy"] <= 1.0
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"

    evaluation, scores = artifact(Artifact, "evaluation"), artifact(Metrics, "scores")
    ev_report = artifact(HTML, "ev")
    evaluate(best, uri, run_id, prepared, model, evaluation, scores, ev_report)
    summary = json.loads((out / "evaluation/evaluation.json").read_text())
    assert scores.metadata["accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
    assert summary["split"] == "test" and summary["rows"] == 16
    assert 'alt="Confusion matrix' in page(ev_report) and "Reliability" in page(ev_report)

    version_file = out / "version"
    record, gate_report = artifact(Artifact, "record"), artifact(HTML, "gate")
    gate = register(best, uri, run_id, model, evaluation, str(version_file), record, gate_report)
    client = MlflowClient(uri)
    version = version_file.read_text()
    assert client.get_model_version("tiny", version).run_id == run_id
    assert json.loads((out / "record/registered.json").read_text())["version"] == version
    # A dry run: the gate answered (no champion yet, floor 0: promote) and moved nothing.
    assert gate == "promote"
    assert json.loads((out / "record/decision.json").read_text())["decision"]["promote"]
    assert f"Registered tiny version {version}" in page(gate_report)
    assert "Gate on tiny version 1: promote" in page(gate_report)
    with pytest.raises(Exception, match="champion"):
        client.get_model_version_by_alias("tiny", "champion")

    promoted = artifact(HTML, "promoted")
    promote(best, uri, version, artifact(Artifact, "promoted-record"), promoted)
    assert "champion alias moved" in page(promoted)
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == version
