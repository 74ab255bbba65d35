"""A causal LM through the registry: register, serve generations as a pyfunc, gate on loss."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from ftpipe.registry.client import scoped_mlflow
from ftpipe.registry.promote import promote
from ftpipe.registry.tracking import TrainingRun, log_evaluation
from ftpipe.registry.versions import register
from ftpipe.stages.evaluate import evaluate_model, load_heldout
from ftpipe.train.predictor import Predictor
from tests.unit.registry.helpers import evaluated_versions, with_registry


def test_a_chat_model_registers_generates_and_is_gated_on_its_loss(
    lm_chat_trained, tmp_path, tracking_uri, model_name
):
    config, outcome = lm_chat_trained
    config = with_registry(config, tracking_uri, model_name)
    predictor = Predictor.load(outcome.model_dir, generation=config.generate, generate_rows=9)
    heldout = load_heldout(config.data.output_dir)
    versions = []
    steps = evaluated_versions(config, predictor, heldout, outcome.model_dir, tmp_path)
    for attempt, (version, evaluation, decision) in enumerate(steps):
        versions.append(version)
        assert decision.metric == "loss"  # promote.metric auto: the eval loss, lower is better
        assert decision.challenger == pytest.approx(evaluation.metrics["loss"])
        if attempt == 0:  # no champion, and a loss has no floor
            assert decision.promote and "floor" not in decision.checks
        else:  # identical losses: the reduction's interval is [0, 0], not above the margin
            assert not decision.promote and decision.ci_low == decision.ci_high == 0.0
            assert decision.class_f1_deltas == {} and "reduction" in decision.reason

    uri = f"models:/{model_name}/{versions[0].version}"
    question = [{"role": "user", "content": "kindly route my ticket about invoice"}]
    with scoped_mlflow(tracking_uri):
        info = mlflow.models.get_model_info(uri)
        served = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"messages": [question]}))
    assert info.signature.inputs.input_names() == ["messages"]
    assert info.signature.outputs.input_names() == ["generated"]
    assert served["generated"][0] == predictor.predict([], words=[question])["generated"][0]
    assert served["generated"][0] == "billing team"


def test_the_gate_compares_exact_match_when_asked(lm_chat_trained, tmp_path, tracking_uri):
    config, outcome = lm_chat_trained
    config = with_registry(config, tracking_uri, "ftpipe-lm-exact", "promote.metric=exact_match")
    predictor = Predictor.load(outcome.model_dir, generation=config.generate, generate_rows=9)
    evaluation = evaluate_model(
        predictor, load_heldout(config.data.output_dir), tmp_path / "eval", outcome.model_dir
    )
    with TrainingRun(config, record_dir=tmp_path / "run") as run:
        pass
    evaluation.run_id = log_evaluation(evaluation, config, run.run_id)
    register(config, outcome.model_dir, run_id=run.run_id, evaluation=evaluation)
    decision = promote(config).decision
    assert decision.metric == "exact_match"
    assert decision.challenger == pytest.approx(evaluation.metrics["exact_match"])
    assert decision.ci_low <= decision.challenger <= decision.ci_high
