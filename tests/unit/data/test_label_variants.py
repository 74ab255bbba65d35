"""Label variants (issue 20, defect 4): labels equal but for case, width, accents or invisible
characters must not silently become classes of their own; thin classes are warned about."""

from __future__ import annotations

import logging

import pytest

from ftpipe.data import run_prep
from ftpipe.errors import DataError
from tests.helpers import write_csv

VARIANTS = [
    "POS",
    "\uff50\uff4f\uff53",
    "p\u200bos",
    "po\u0301s",
]  # upper, full-width, ZWSP, accent


def _rows(labels: list[str], per_label: int = 6) -> list[list[str]]:
    return [[f"example {label} number {i}", label] for i in range(per_label) for label in labels]


def test_label_variants_are_warned_about_with_their_counts(tmp_path, make_config, caplog):
    train = write_csv(tmp_path / "train.csv", _rows(["pos", "neg", *VARIANTS]))
    with caplog.at_level(logging.WARNING):
        run_prep(make_config(train=str(train)))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    variant = [m for m in warnings if "variant" in m.lower()]
    assert len(variant) == 1, warnings
    for label in ["pos", *VARIANTS]:
        assert f"{label!r} (6 rows)" in variant[0]
    assert "'neg'" not in variant[0]


def test_a_variant_of_a_declared_label_fails_naming_both(tmp_path, make_config):
    rows = [*_rows(["pos", "neg"]), ["one more text", "POS"]]
    train = write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(DataError, match=r"'POS'.*variant.*'pos'") as info:
        run_prep(make_config(train=str(train), labels=["pos", "neg"], on_error="drop"))
    assert "data.labels" in str(info.value)


def test_a_class_with_few_training_rows_is_warned_about(tmp_path, make_config, caplog):
    rows = _rows(["pos", "neg"], per_label=20) + _rows(["rare"], per_label=2)
    train = write_csv(tmp_path / "train.csv", rows)
    with caplog.at_level(logging.WARNING):
        run_prep(make_config(train=str(train)))
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "'rare'" in warnings and "data.min_rows_per_class" in warnings
    assert "'pos'" not in warnings


def test_a_class_without_eval_rows_is_warned_about(tmp_path, make_config, caplog):
    train = write_csv(tmp_path / "train.csv", _rows(["pos", "neg", "solo"], per_label=8))
    held_out = write_csv(tmp_path / "eval.csv", [["held out a", "pos"], ["held out b", "neg"]])
    with caplog.at_level(logging.WARNING):
        run_prep(make_config(train=str(train), eval=str(held_out)))
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "'solo'" in warnings and "no eval rows" in warnings
