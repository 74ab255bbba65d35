"""Evaluate and predict for an entity tagger trained in the test: offsets, windows, the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ftpipe.stages import predict
from ftpipe.stages.evaluate import evaluate_model, load_heldout
from ftpipe.train.predictor import Predictor
from tests.helpers import write_jsonl
from tests.ner_helpers import MERKEL

EXPECTED = [("Angela Merkel", "PER", 0, 13), ("Siemens", "ORG", 26, 33), ("Munich", "LOC", 43, 49)]


def spans_of(entities: list[dict]) -> list[tuple]:
    return [(e["text"], e["type"], e["start"], e["end"]) for e in entities]


def test_predict_returns_the_entities_of_a_text_with_character_offsets(ner_trained):
    _, model_dir, _ = ner_trained
    frame = predict.run(model_dir, texts=[MERKEL]).frame
    entities = frame["entities"][0]
    assert spans_of(entities) == EXPECTED
    for entity in entities:
        assert MERKEL[entity["start"] : entity["end"]] == entity["text"]
        assert 0.0 < entity["score"] <= 1.0
    assert frame["tags"][0][:2] == ["B-PER", "I-PER"] and len(frame["tags"][0]) == 11


def test_a_text_longer_than_max_length_is_read_in_windows_and_keeps_its_offsets(ner_trained):
    _, model_dir, _ = ner_trained
    text = " ".join([MERKEL] * 4)  # 44 words: windows of 22 pieces
    entities = predict.run(model_dir, texts=[text]).frame["entities"][0]
    shift = len(MERKEL) + 1
    expected = [(t, k, a + i * shift, b + i * shift) for i in range(4) for t, k, a, b in EXPECTED]
    assert spans_of(entities) == expected


def test_evaluate_scores_entities_on_the_test_split_and_writes_the_report(ner_trained, tmp_path):
    config, model_dir, _ = ner_trained
    heldout = load_heldout(config.data.output_dir)
    assert heldout.split == "test"
    assert all(len(t.split(" ")) == len(lab.split(" ")) for t, lab in
               zip(heldout.texts, heldout.labels, strict=True))  # fmt: skip
    evaluation = evaluate_model(Predictor.load(model_dir), heldout, tmp_path, str(model_dir))
    metrics = evaluation.metrics
    assert metrics["entity_f1"] > 0.9, metrics
    assert {"f1/PER", "f1/ORG", "f1/LOC", "token_accuracy", "latency_p95_ms"} <= set(metrics)
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    patterns = json.loads((tmp_path / "error_patterns.json").read_text())
    assert all(p["kind"] in ("missed", "spurious", "wrong type", "wrong boundary",
                             "wrong type and boundary") for p in patterns)  # fmt: skip
    rows = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(rows) == evaluation.rows == len(heldout.texts)
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.scheme import IOB2

    expected = seqeval.f1_score(
        [s.split(" ") for s in rows["label"]], [s.split(" ") for s in rows["predicted"]],
        mode="strict", scheme=IOB2,
    )  # fmt: skip
    assert metrics["entity_f1"] == pytest.approx(expected)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_file_of_word_lists_is_tagged_with_offsets_into_the_joined_words(
    ner_trained, tmp_path, suffix
):
    _, model_dir, _ = ner_trained
    words = [*MERKEL[:-1].split(" "), "."]
    source = write_jsonl(tmp_path / "in.jsonl", [{"tokens": words}, {"tokens": ["Paris"]}])
    target = tmp_path / f"out{suffix}"
    predict.run(model_dir, input_file=source, output=target, text_column="tokens")
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in target.read_text().splitlines()]
        entities = rows[0]["entities"]
    else:
        entities = json.loads(pd.read_csv(target)["entities"][0])
    text = " ".join(words)
    assert [(e["text"], e["type"]) for e in entities] == [(t, k) for t, k, _, _ in EXPECTED]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)
