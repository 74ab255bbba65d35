"""A pipeline run's outputs as small files, in `ftpipe run --no-kfp`'s layout or KFP's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

RUN = "ftpipe-finetune-20260101-120000"

# Where each stage's output folder lies, under the run, in each layout.
LAYOUTS = {
    "sequential": {"prep": "prep", "recommend": "recommend", "tune": "tune", "train": "train",
                   "evaluate": "evaluate", "register": "register", "promote": "promote"},
    "kfp": {"prep": "prep/prepared", "recommend": "recommend/recommendation",
            "tune": "tune/sweep", "train": "train", "evaluate": "evaluate/evaluation",
            "register": "register", "promote": "promote"},
}  # fmt: skip

TRIAL = "_trial_d723a_0000{}_0_train_lr=0.0030_2026-01-01_12-00-00"


def _write(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def _split(rows: int, dropped: dict[str, int]) -> dict[str, Any]:
    return {"rows": rows, "dropped": dropped, "rows_per_label": {"bad": rows // 2,
            "good": rows - rows // 2}, "token_length": {"mean": 9.5, "p50": 9.0, "p95": 12.0,
            "max": 12}, "truncated_share": 0.0, "unknown_token_rate": 0.12}  # fmt: skip


def _png() -> bytes:
    from matplotlib.figure import Figure

    from ftpipe.report.html import figure_png

    figure = Figure(figsize=(2, 2))
    figure.add_subplot().plot([0, 1], [0, 1])
    return figure_png(figure)


def write_run(root: Path, layout: str = "sequential") -> Path:
    """Every stage's outputs of one run of a 2-class classifier; returns the run's folder."""
    run = root / RUN
    where = {stage: run / folder for stage, folder in LAYOUTS[layout].items()}
    _write(where["prep"] / "stats.json", {
        "fingerprint": "8e7fc34e7ce5" + "0" * 52, "labels": ["bad", "good"], "max_length": 16,
        "model": "tiny-bert", "task": "sequence-classification",
        "splits": {"train": _split(44, {"empty_text": 3}), "eval": _split(20, {}),
                   "test": _split(16, {})}})  # fmt: skip
    _write(where["recommend"] / "recommendation.json", {
        "strategy": "freeze", "case": "small-dissimilar", "lr_range": [1e-5, 5e-5],
        "head_lr_range": [1e-4, 1e-3], "reasons": ["Small data: 22 rows per class."],
        "search_space": {"train.lr": "loguniform(1e-05, 5e-05)"},
        "measurements": {"probe_accuracy": 0.975, "rows_per_class": {"bad": 22}}})  # fmt: skip
    sweep = where["tune"] / "sweep-a6f3b042a3"
    _write(sweep / "best.json", {"metric": "macro_f1", "best": 0.9, "config": {"train.lr": 3e-3},
                                 "trial": str(sweep / TRIAL.format(0))})  # fmt: skip
    _write(sweep / "results.csv", (
        "trial,train.lr,best_macro_f1,last_macro_f1,evaluations,last_epoch,stop_reason\n"
        f"{TRIAL.format(0)},0.003,0.9,0.9,3,3.0,completed\n"
        f"{TRIAL.format(1)},0.0001,0.5,0.5,1,1.0,stopped by ASHA\n"
        f"{TRIAL.format(2)},0.1,,,,,error: RuntimeError\n"))  # fmt: skip
    (sweep / "metric_vs_lr.png").write_bytes(_png())
    # Ray's own result.json, in a trial folder: not the training outcome.
    _write(sweep / TRIAL.format(0) / "result.json", {"loss": 1.0})
    history = [{"step": s, "epoch": s / 5, "loss": 0.7 - s / 100, "accuracy": 0.5 + s / 50,
                "macro_f1": 0.4 + s / 50} for s in (5, 10, 15)]  # fmt: skip
    _write(where["train"] / "result.json", {"model_dir": "m", "best_checkpoint": "c",
           "metrics": history[-1], "final_metrics": history[-1], "history": history})  # fmt: skip
    _write(where["train"] / "tracking.json", {"run_id": "b3ecc165", "tracking_uri": "sqlite://"})
    _write(where["train"] / "model" / "ftpipe.json", {"task": "sequence-classification",
           "base_model": "tiny-bert", "strategy": "freeze"})  # fmt: skip
    evaluate = where["evaluate"]
    _write(evaluate / "evaluation.json", {
        "model": "m", "fingerprint": "f", "rows": 16, "output_dir": str(evaluate),
        "split": "test", "metrics": {"accuracy": 0.75, "macro_f1": 0.7, "ece": 0.05,
        "rows": 16.0, "precision/bad": 0.8, "recall/bad": 0.7, "f1/bad": 0.75,
        "precision/good": 0.6, "recall/good": 0.7, "f1/good": 0.65}})  # fmt: skip
    (evaluate / "confusion_matrix.png").write_bytes(_png())
    _write(evaluate / "reliability.json", {"bins": 4, "rows": [0, 4, 6, 6],
           "correct": [0, 2, 4, 6], "confidence": [0, 1.5, 4.0, 5.5]})  # fmt: skip
    wrong = [{"row": i, "text": f"<b>row {i}</b>", "label": "good", "predicted": "bad",
              "confidence": 0.99 - i / 100} for i in range(20)]  # fmt: skip
    _write(evaluate / "errors.jsonl", "".join(json.dumps(row) + "\n" for row in wrong))
    _write(where["register"] / "registered.json", {"name": "tiny", "version": "3",
           "run_id": "b3ecc165", "reused": False, "orphans": []})  # fmt: skip
    decision = {"promote": True, "reason": "The interval lies above the margin.",
                "metric": "macro_f1", "challenger": 0.7, "champion": 0.6, "ci_low": 0.02,
                "ci_high": 0.18, "checks": {"margin": True, "class_f1_drop": True},
                "class_f1_deltas": {"bad": 0.1, "good": 0.05}, "split": "test",
                "optimistic": False}  # fmt: skip
    _write(where["promote"] / "decision.json", {"name": "tiny", "version": "3",
           "champion_before": "2", "champion_after": "3", "changed": True, "sequence": 4,
           "decision": decision})  # fmt: skip
    return run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A complete run in `ftpipe run --no-kfp`'s layout."""
    return write_run(tmp_path)
