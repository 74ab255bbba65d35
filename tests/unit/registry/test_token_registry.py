"""An entity tagger through the registry: register, serve as a pyfunc, promote on entity F1."""

from __future__ import annotations

import shutil

import mlflow
import pandas as pd

from ftpipe.registry.client import scoped_mlflow
from ftpipe.registry.promote import promote
from ftpipe.registry.tracking import TrainingRun, log_evaluation
from ftpipe.registry.versions import register
from ftpipe.stages.evaluate import evaluate_model, load_heldout
from ftpipe.train.predictor import Predictor
from tests.ner_helpers import MERKEL
from tests.unit.registry.helpers import with_registry


def test_a_tagger_registers_serves_entities_and_is_gated_on_entity_f1(
    ner_trained, tmp_path, tracking_uri, model_name
):
    config, model_dir, _ = ner_trained
    config = with_registry(config, tracking_uri, model_name)
    predictor = Predictor.load(model_dir)
    heldout = load_heldout(config.data.output_dir)

    # The same weights twice; the copy's model card differs, so it registers as a new version
    # that cannot beat the first.
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    with (copy / "README.md").open("a") as card:
        card.write("\nA copy.\n")
    versions = []
    for attempt, directory in enumerate((model_dir, copy)):
        with TrainingRun(config, record_dir=tmp_path / str(attempt)) as run:
            pass
        evaluation = evaluate_model(predictor, heldout, tmp_path / f"eval{attempt}", str(directory))
        evaluation.run_id = log_evaluation(evaluation, config, run.run_id)
        versions.append(register(config, directory, run_id=run.run_id, evaluation=evaluation))
        decision = promote(config).decision
        assert decision.metric == "entity_f1"
        assert decision.challenger == evaluation.metrics["entity_f1"]
        if attempt == 0:  # no champion: the floor (0) against the interval's lower bound
            assert decision.promote and decision.champion is None
        else:  # identical predictions: the difference's interval is [0, 0], not above 0
            assert not decision.promote and decision.ci_low == decision.ci_high == 0.0
            assert set(decision.class_f1_deltas) == {"LOC", "ORG", "PER"}

    uri = f"models:/{model_name}/{versions[0].version}"
    with scoped_mlflow(tracking_uri):
        info = mlflow.models.get_model_info(uri)
        served = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": [MERKEL]}))
    assert info.signature.outputs.input_names() == ["entities", "tags"]
    local = predictor.predict([MERKEL])
    assert served["entities"][0] == local["entities"][0]
    assert [e["text"] for e in served["entities"][0]] == ["Angela Merkel", "Siemens", "Munich"]
