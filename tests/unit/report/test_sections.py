"""Each section from its stage's files: what it shows, and what it leaves out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ftpipe.report.data import data_section
from ftpipe.report.evaluation import evaluation_section, per_class_rows
from ftpipe.report.gate import gate_section, register_section
from ftpipe.report.recommend import recommendation_section
from ftpipe.report.sweep import short_trial, sweep_section
from ftpipe.report.training import training_section
from ftpipe.tasks.classification_report import (
    ERRORS,
    RELIABILITY,
    expected_calibration_error,
    write_report_files,
)


def rows_of(html: str) -> list[list[str]]:
    """The cells of every table row, as text."""
    import re

    return [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in html.split("<tr>")[1:]]


def test_data_shows_rows_per_split_drops_and_classes(run_dir):
    rows = rows_of(data_section(run_dir / "prep"))
    assert ["train", "44", "3", "9.5", "9", "12", "12", "0.0%", "12.00%"] in rows
    assert ["train", "empty_text", "3"] in rows
    assert ["bad", "22", "10", "8"] in rows


def test_the_recommendation_says_what_and_why(run_dir):
    html = recommendation_section(run_dir / "recommend")
    assert "Strategy: freeze (small and dissimilar)." in html
    assert "<li>Small data: 22 rows per class.</li>" in html
    assert "backbone 1e-05 to 5e-05, head 1e-04 to 1e-03" in html
    assert "rows_per_class" not in html  # nested measurements are in the reasons already


def test_the_sweep_lists_every_trial_with_its_lr_and_why_it_stopped(run_dir):
    (sweep,) = (run_dir / "tune").glob("sweep-*")
    rows = rows_of(sweep_section(sweep))
    assert [r[0] for r in rows[1:]] == ["d723a_00000", "d723a_00001", "d723a_00002"]
    assert [r[-1] for r in rows[1:]] == ["completed", "stopped by ASHA", "error: RuntimeError"]
    assert [r[1] for r in rows[1:]] == ["0.003", "0.0001", "0.1"]
    assert short_trial("not-a-trial") == "not-a-trial"


def test_training_shows_the_curves_and_the_best_checkpoint(run_dir):
    html = training_section(run_dir / "train")
    assert "checkpoint of step 15 (epoch 3.00) of 3 evaluations" in html
    assert html.count("<img") == 1
    assert ["macro_f1", "0.7", "0.7"] in rows_of(html)


def test_evaluation_shows_per_class_metrics_confusion_reliability_and_errors(run_dir):
    html = evaluation_section(run_dir / "evaluate")
    rows = rows_of(html)
    assert ["bad", "0.75", "0.8", "0.7"] in rows  # class, f1, precision, recall
    assert 'alt="Confusion matrix' in html and 'alt="Reliability diagram"' in html
    assert "The 20 most confident errors" in html
    assert "Generations" not in html and "Most frequent errors" not in html


def test_evaluation_leaves_out_what_the_task_did_not_write(run_dir):
    for name in ("confusion_matrix.png", RELIABILITY, ERRORS):
        (run_dir / "evaluate" / name).unlink()
    (run_dir / "evaluate" / "error_patterns.json").write_text(
        json.dumps([{"kind": "missed", "pattern": "PER", "count": 4}])
    )
    html = evaluation_section(run_dir / "evaluate")
    assert "<img" not in html and "most confident" not in html
    assert ["missed", "PER", "4"] in rows_of(html)


def test_per_class_rows_is_none_without_per_class_metrics():
    assert per_class_rows({"loss": 1.0, "perplexity": 2.7}) is None


def test_register_says_what_was_registered_and_the_gate_why(run_dir):
    html = register_section(run_dir / "register" / "registered.json",
                            run_dir / "promote" / "decision.json")  # fmt: skip
    assert "Registered tiny version 3 from MLflow run b3ecc165." in html
    assert "Gate on tiny version 3: promote." in html
    assert "The champion alias moved from 2 to 3." in html
    rows = rows_of(html)
    assert ["ci_low", "0.02"] in rows and ["margin", "pass"] in rows and ["bad", "0.1"] in rows


def test_a_version_already_champion_has_no_decision(tmp_path):
    path = tmp_path / "decision.json"
    path.write_text(json.dumps({"name": "tiny", "version": "3", "decision": None}))
    assert "tiny version 3 already is the champion." in gate_section(path)


def test_report_files_bin_as_the_ece_does_and_list_the_most_confident_errors(tmp_path):
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 100)
    correct = rng.uniform(size=100) < confidence
    frame = pd.DataFrame({"row": np.arange(100), "text": [f"t{i}" for i in range(100)],
                          "label": "a", "predicted": np.where(correct, "a", "b"),
                          "correct": correct, "confidence": confidence})  # fmt: skip
    write_report_files(frame, tmp_path, bins=10)
    bins = json.loads((tmp_path / RELIABILITY).read_text())
    gaps = np.abs(np.subtract(bins["correct"], bins["confidence"])).sum() / 100
    probs = np.stack([confidence, 1 - confidence], axis=1)
    assert gaps == expected_calibration_error(probs, (~correct).astype(int), bins=10)
    errors = pd.read_json(tmp_path / ERRORS, lines=True)
    assert len(errors) == min(20, int((~correct).sum()))
    assert errors["confidence"].is_monotonic_decreasing
    assert errors["confidence"].iloc[0] == pytest.approx(confidence[~correct].max())


def test_an_error_of_many_pages_is_cut_in_the_table(run_dir):
    path = run_dir / "evaluate" / ERRORS
    row = {"row": 1, "text": "word " * 1000, "label": "a", "predicted": "b", "confidence": 0.9}
    path.write_text(json.dumps(row) + "\n")
    html = evaluation_section(run_dir / "evaluate")
    assert "The 1 most confident errors" in html
    assert "word " * 80 + "…" in html and "word " * 81 not in html
