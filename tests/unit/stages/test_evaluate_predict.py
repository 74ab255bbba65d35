"""`evaluate` and `predict` on an exported tiny model: no MLflow involved."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from ftpipe.stages.evaluate import evaluate_model, heldout_fingerprint, load_heldout
from ftpipe.stages.predict import default_output, predict_file
from ftpipe.tasks.calibration import softmax
from ftpipe.tasks.classification_report import ece_noise_floor, expected_calibration_error
from ftpipe.train.predictor import Predictor
from tests.helpers import write_csv


def test_ece_is_zero_when_confidence_matches_accuracy_and_the_gap_otherwise():
    # 10 rows at confidence 0.8, 8 of them right: calibrated.
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels, bins=15) == pytest.approx(0.0)
    # Same confidence, all wrong: the gap is the confidence.
    assert expected_calibration_error(probs, np.ones(10, int), bins=15) == pytest.approx(0.8)
    # Two bins: 0.95 (all right, gap 0.05) and 0.6 (half right, gap 0.1), equal weight.
    probs = np.array([[0.95, 0.05]] * 4 + [[0.6, 0.4]] * 4)
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    assert expected_calibration_error(probs, labels, bins=15) == pytest.approx(0.075)


def test_evaluate_reproduces_the_training_metrics_and_writes_its_files(trained, tmp_path):
    config, model_dir = trained("full")
    training = json.loads((model_dir / "metrics.json").read_text())
    heldout = load_heldout(config.data.output_dir)

    evaluation = evaluate_model(
        Predictor.load(model_dir), heldout, tmp_path / "eval", str(model_dir), latency_rows=3
    )

    m = evaluation.metrics
    assert m["accuracy"] == pytest.approx(training["accuracy"], abs=1e-9)
    assert m["macro_f1"] == pytest.approx(training["macro_f1"], abs=1e-9)
    assert m["loss_raw"] == pytest.approx(training["loss"], rel=1e-4)
    # Served probabilities apply the temperature training fit on this same eval split.
    assert m["temperature"] == pytest.approx(training["temperature"], rel=1e-9)
    for key in ("ece_raw", "ece_calibrated", "loss_calibrated"):
        assert m[key] == pytest.approx(training[key], rel=1e-4, abs=1e-6), key
    assert (m["loss"], m["ece"]) == pytest.approx((m["loss_calibrated"], m["ece_calibrated"]))
    for name in ("good", "bad"):
        assert m[f"f1/{name}"] == pytest.approx(training[f"f1/{name}"], abs=1e-9)
        assert 0 <= m[f"precision/{name}"] <= 1 and 0 <= m[f"recall/{name}"] <= 1
    assert 0 <= m["ece"] <= 1 and m["latency_p95_ms"] > 0 and m["size_mb"] > 0
    # The ECE's noise on this few rows, from the served confidences (tasks/test_calibration).
    confidence = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")["confidence"]
    assert m["ece_floor"] == ece_noise_floor(confidence.to_numpy(), 15) > 0
    predictions = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    assert list(predictions.columns[:6]) == ["row", "text", "label", "predicted", "correct",
                                             "confidence"]  # fmt: skip
    assert predictions["row"].tolist() == list(range(len(heldout.texts)))
    assert predictions["correct"].mean() == pytest.approx(m["accuracy"])
    assert np.allclose(predictions[["prob_bad", "prob_good"]].sum(axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "eval" / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert summary["fingerprint"] == heldout.fingerprint and summary["rows"] == len(predictions)


def test_evaluate_scores_the_test_split_when_prep_held_one_out_and_says_which(trained, tmp_path):
    from ftpipe.config import apply_overrides
    from ftpipe.config.load import validate_config
    from ftpipe.data import run_prep

    config, model_dir = trained("full")
    predictor = Predictor.load(model_dir)
    assert load_heldout(config.data.output_dir).split == "eval"  # no test split: eval

    raw = config.model_dump(mode="json")
    with_test = validate_config(apply_overrides(raw, [
        "data.test_fraction=0.2", f"data.output_dir={tmp_path / 'prep'}",
    ]))  # fmt: skip
    run_prep(with_test)
    heldout = load_heldout(with_test.data.output_dir)
    test_texts = pd.read_parquet(tmp_path / "prep" / "test")["text"].tolist()
    assert heldout.split == "test" and heldout.texts == test_texts

    evaluation = evaluate_model(
        predictor, heldout, tmp_path / "eval", str(model_dir), latency_rows=0
    )
    assert evaluation.split == "test" and evaluation.rows == len(test_texts)
    summary = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert summary["split"] == "test"


def test_predictions_divide_the_logits_by_the_exports_temperature(trained, tmp_path):
    import shutil

    _, model_dir = trained("full")
    texts = ["good hello help please", "bad late crash twice", "hello crash"]
    sharper = shutil.copytree(model_dir, tmp_path / "model")
    manifest = json.loads((sharper / "ftpipe.json").read_text())
    (sharper / "ftpipe.json").write_text(json.dumps(manifest | {"temperature": 0.5}))

    original, changed = Predictor.load(model_dir), Predictor.load(sharper)
    assert original.temperature == manifest["temperature"] and changed.temperature == 0.5
    logits = original.logits(texts)
    np.testing.assert_allclose(changed.logits(texts), logits, rtol=1e-6)
    for predictor in (original, changed):
        expected = softmax(logits / predictor.temperature)
        np.testing.assert_allclose(predictor.probabilities(texts), expected, rtol=1e-5)
    assert (changed.frame(changed.probabilities(texts))["label"]
            == original.frame(original.probabilities(texts))["label"]).all()  # fmt: skip


def test_the_held_out_fingerprint_covers_texts_labels_and_order():
    base = heldout_fingerprint(["a", "b"], None, ["x", "y"])
    assert base == heldout_fingerprint(["a", "b"], None, ["x", "y"])
    assert base != heldout_fingerprint(["a", "b"], None, ["x", "x"])
    assert base != heldout_fingerprint(["b", "a"], None, ["y", "x"])
    assert base != heldout_fingerprint(["a", "b"], ["p", "q"], ["x", "y"])


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".jsonl", ".parquet", ".txt"])
def test_predict_streams_any_format_in_chunks_with_the_labels_of_a_single_batch(
    trained, tmp_path, suffix, monkeypatch
):
    _, model_dir = trained("full")
    predictor = Predictor.load(model_dir, batch_size=4)
    texts = [f"good hello help {i}" if i % 3 else f"bad late crash, twice {i}" for i in range(23)]
    source = tmp_path / f"in{suffix}"
    if suffix.startswith(".csv"):
        write_csv(tmp_path / "in.csv", [[t, "x"] for t in texts])
        if suffix.endswith(".gz"):
            source.write_bytes(gzip.compress((tmp_path / "in.csv").read_bytes()))
    elif suffix == ".jsonl":
        source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    elif suffix == ".parquet":
        pd.DataFrame({"text": texts}).to_parquet(source)
    else:
        source.write_text("\n".join(texts) + "\n")
    monkeypatch.setattr("ftpipe.stages.predict.CHUNK_ROWS", 5)  # several chunks from a small file

    target = default_output(source)
    rows = predict_file(predictor, source, target, progress=False)

    assert rows == len(texts)
    written = pd.read_csv(target) if target.suffix == ".csv" else (
        pd.read_json(target, lines=True) if target.suffix == ".jsonl" else pd.read_parquet(target)
    )  # fmt: skip
    expected = predictor.frame(predictor.probabilities(texts))
    assert written["row"].tolist() == list(range(len(texts)))
    assert written["text"].tolist() == texts
    assert written["label"].tolist() == expected["label"].tolist()
    np.testing.assert_allclose(written["prob_good"], expected["prob_good"], rtol=1e-5)
