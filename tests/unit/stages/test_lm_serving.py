"""Serving causal LMs: held-out loss as training scored it, generation, exact match, ROUGE-L."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ftpipe.errors import FtpipeError
from ftpipe.stages.evaluate import evaluate_model, load_heldout
from ftpipe.stages.predict import predict_file
from ftpipe.tasks import get_task
from ftpipe.tasks.alpaca import render_prompt
from ftpipe.tasks.lm_serving import LMOutputs, Prompted, normalized, rouge_l, score_rows
from ftpipe.train.predictor import Predictor
from tests.helpers import ftpipe, write_jsonl


@pytest.mark.parametrize("run", ["lm_chat_trained", "lm_completion_trained"])
def test_evaluate_scores_the_loss_training_measured_and_generates_the_answers(request, run):
    config, outcome = request.getfixturevalue(run)
    heldout = load_heldout(config.data.output_dir)
    predictor = Predictor.load(outcome.model_dir, 16, "evaluate", config.generate, 9)
    evaluation = evaluate_model(predictor, heldout, config.evaluate.output_dir, "model", 15, 2)
    m = evaluation.metrics
    # The held-out set is prep's eval split, which training scored at its best checkpoint.
    assert m["loss"] == pytest.approx(outcome.metrics["loss"], rel=1e-4)
    assert m["perplexity"] == pytest.approx(np.exp(m["loss"]))
    assert m["generated_rows"] == 9
    # Chance is near 0 (an untrained model answers with any of its words); the tuned one
    # mostly names the team.
    assert m["exact_match"] >= 0.5 and m["rouge_l"] >= m["exact_match"]
    frame = pd.read_parquet(Path(evaluation.output_dir) / "predictions.parquet")
    assert len(frame) == len(heldout.texts) and frame["generated"].notna().sum() == 9
    answers = frame.dropna(subset=["generated"])
    assert answers["exact_match"].mean() == m["exact_match"]
    assert (answers["exact_match"] == (answers["generated"] == answers["reference"])).all()
    table = (Path(evaluation.output_dir) / "generations.md").read_text()
    assert table.startswith("| row | prompt | reference | generation |") and "team" in table


def test_predict_answers_prompts_and_conversations(lm_chat_trained):
    _, outcome = lm_chat_trained
    predictor = Predictor.load(outcome.model_dir)
    frame = predictor.predict(["kindly route my ticket about invoice"])
    assert list(frame.columns) == ["generated"]
    assert frame["generated"][0] == "billing team"
    conversation = [{"role": "user", "content": "urgent route the ticket about password"}]
    assert predictor.predict([], words=[conversation])["generated"][0] == "identity team"


def test_a_completion_model_refuses_a_conversation(lm_completion_trained):
    _, outcome = lm_completion_trained
    predictor = Predictor.load(outcome.model_dir)
    with pytest.raises(FtpipeError, match="tuned on prompt text, not on conversations"):
        predictor.predict([], words=[[{"role": "user", "content": "route ticket"}]])


def test_generation_stops_at_eos_and_long_prompts_keep_their_end(lm_completion_trained):
    config, outcome = lm_completion_trained
    predictor = Predictor.load(outcome.model_dir)
    generator = predictor.generator
    long = " ".join(["please"] * 60) + " route my ticket about login"
    ids = generator.prompt_ids(long)
    assert len(ids) == config.data.max_length and ids[0] == generator.tokenizer.bos_token_id
    assert generator.tokenizer.decode(ids[-5:]) == "route my ticket about login"
    assert generator.generate([long]) == ["identity team"]


def test_rouge_l_and_exact_match_by_hand():
    assert rouge_l("the billing team", "billing team") == pytest.approx(2 * (2 / 3) * 1 / (5 / 3))
    assert rouge_l("team billing", "billing team") == pytest.approx(0.5)
    assert rouge_l("", "billing team") == 0.0 and rouge_l("x y", "z") == 0.0
    assert normalized("  Billing\n Team ") == "billing team"


def test_scores_skip_rows_without_a_reference_and_weigh_loss_by_tokens():
    outputs = LMOutputs(
        loss_sums=np.array([2.0, 6.0, 1.0]), tokens=np.array([2, 3, 1]),
        prompted=[Prompted("a", "Yes"), Prompted("b", None), Prompted("c", "no way")],
        generations=["yes", "no"],
    )  # fmt: skip
    metrics, frame = score_rows(outputs)
    assert metrics["loss"] == pytest.approx(9 / 6)
    assert metrics["exact_match"] == 0.5 and metrics["generated_rows"] == 2
    assert frame["generated"].isna().tolist() == [False, True, False]
    assert frame["generated"][2] == "no"
    assert frame["rouge_l"].tolist()[2] == pytest.approx(2 / 3)


def test_the_signature_names_messages_for_chat_models(lm_chat_trained, lm_completion_trained):
    task = get_task("causal-lm")
    for (config, _), column in ((lm_chat_trained, "messages"), (lm_completion_trained, "text")):
        inputs, outputs = task.signature((), config.data)
        assert list(inputs) == [column] and outputs == {"generated": "string"}


def test_the_cli_streams_one_answer_and_a_file_of_conversations_is_answered(
    lm_chat_trained, tmp_path
):
    _, outcome = lm_chat_trained
    done = ftpipe("predict", "--model", outcome.model_dir, "--prompt",
                  "urgent route my ticket about laptop")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "hardware team"
    questions = ["now route the ticket about refund", "again route my ticket about login"]
    source = write_jsonl(
        tmp_path / "asks.jsonl", [{"messages": [{"role": "user", "content": q}]} for q in questions]
    )
    rows = predict_file(Predictor.load(outcome.model_dir), source, tmp_path / "out.jsonl",
                        text_column="messages")  # fmt: skip
    answers = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert rows == 2 and answers["generated"].tolist() == ["billing team", "identity team"]
    assert answers["messages"][0] == [{"role": "user", "content": questions[0]}]


def test_an_alpaca_model_is_asked_in_its_training_prompt(lm_completion_trained):
    config, outcome = lm_completion_trained
    alpaca = config.model_copy(update={"data": config.data.model_copy(
        update={"instruction_column": "instruction"})})  # fmt: skip
    generator = replace(Predictor.load(outcome.model_dir).generator, config=alpaca)
    instruction = "route my ticket about login"
    rendered = render_prompt(instruction)
    assert rendered.startswith("Below is an instruction") and instruction in rendered
    assert generator.ask([instruction]) == generator.generate([rendered])
    ids = generator.prompt_ids(rendered)
    assert len(ids) > len(generator.prompt_ids(instruction)) + 10
