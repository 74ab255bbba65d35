"""An entity tagger through the registry: register, serve as a pyfunc, promote on entity F1."""

from __future__ import annotations

import mlflow
import pandas as pd

from ftpipe.registry.client import scoped_mlflow
from ftpipe.stages.evaluate import load_heldout
from ftpipe.train.predictor import Predictor
from tests.ner_helpers import MERKEL
from tests.unit.registry.helpers import evaluated_versions, with_registry


def test_a_tagger_registers_serves_entities_and_is_gated_on_entity_f1(
    ner_trained, tmp_path, tracking_uri, model_name
):
    config, model_dir, _ = ner_trained
    config = with_registry(config, tracking_uri, model_name)
    predictor = Predictor.load(model_dir)
    heldout = load_heldout(config.data.output_dir)

    versions = []
    steps = evaluated_versions(config, predictor, heldout, model_dir, tmp_path)
    for attempt, (version, evaluation, decision) in enumerate(steps):
        versions.append(version)
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
