"""`predict` output under faults and hostile input: all-or-nothing files, no CSV formulas."""

from __future__ import annotations

import csv
import gzip
import json
import shutil

import pandas as pd
import pytest

from ftpipe.errors import FtpipeError
from ftpipe.stages import predict as stage
from ftpipe.stages.predict import predict_file
from ftpipe.train.predictor import Predictor
from tests.helpers import write_csv, write_jsonl

ROWS = 12_000


def _truncated_gz(tmp_path):
    """A .csv.gz of ROWS rows cut off at two thirds of its bytes, as an interrupted download."""
    plain = write_csv(tmp_path / "in.csv", [[f"good hello help {i}", "x"] for i in range(ROWS)])
    packed = gzip.compress(plain.read_bytes())
    source = tmp_path / "in.csv.gz"
    source.write_bytes(packed[: len(packed) * 2 // 3])
    plain.unlink()
    return source


def test_a_truncated_gzip_leaves_no_partial_output_and_names_the_file(trained, tmp_path):
    _, model_dir = trained("full")
    source = _truncated_gz(tmp_path)
    target = tmp_path / "out" / "in.predictions.csv"

    with pytest.raises(FtpipeError) as raised:
        predict_file(Predictor.load(model_dir, batch_size=256), source, target, progress=False)

    message = str(raised.value)
    assert str(source) in message and "is truncated" in message
    assert "\n" not in message
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left behind either


def test_a_failed_predict_keeps_the_previous_output_whole(trained, tmp_path):
    _, model_dir = trained("full")
    source = _truncated_gz(tmp_path)
    target = tmp_path / "in.predictions.jsonl"
    target.write_text('{"row": 0}\n')

    with pytest.raises(FtpipeError, match="is truncated"):
        stage.run(str(model_dir), input_file=source, output=target, batch_size=256)

    assert target.read_text() == '{"row": 0}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv.gz", "in.predictions.jsonl"]


def test_a_malformed_csv_row_is_a_clear_error_naming_the_file(trained, tmp_path):
    _, model_dir = trained("full")
    source = tmp_path / "bad.csv"
    source.write_text('text,label\ngood hello,x\n"unclosed quote,x\n' + "good,x\n" * 10)
    target = tmp_path / "bad.predictions.csv"

    with pytest.raises(FtpipeError) as raised:
        predict_file(Predictor.load(model_dir), source, target, progress=False)

    assert str(source) in str(raised.value)
    assert not target.exists()


HOSTILE = [
    '=HYPERLINK("http://evil.example","click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\tgood hello",
    "\rgood hello",
    "good hello -1",
]


def _hostile_jsonl(tmp_path):
    # JSONL carries every character of the texts through the reader as it is.
    return write_jsonl(tmp_path / "in.jsonl", [{"text": text} for text in HOSTILE])


def _read_raw_csv(path):
    """The cells as a spreadsheet gets them: strings, nothing parsed or stripped."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return pd.DataFrame(rows[1:], columns=rows[0])


def test_csv_output_escapes_cells_that_a_spreadsheet_would_run_as_formulas(trained, tmp_path):
    _, model_dir = trained("full")
    source = _hostile_jsonl(tmp_path)
    target = tmp_path / "in.predictions.csv"

    predict_file(Predictor.load(model_dir), source, target, progress=False)

    written = _read_raw_csv(target)
    assert written["text"].tolist() == [f"'{t}" for t in HOSTILE[:-1]] + ["good hello -1"]
    assert written["row"].tolist() == [str(i) for i in range(len(HOSTILE))]


def test_jsonl_and_parquet_output_keep_the_text_as_it_was(trained, tmp_path):
    _, model_dir = trained("full")
    source = _hostile_jsonl(tmp_path)

    for suffix in ("jsonl", "parquet"):
        target = tmp_path / f"out.{suffix}"
        predict_file(Predictor.load(model_dir), source, target, progress=False)
        frame = pd.read_parquet(target) if suffix == "parquet" else pd.read_json(
            target, lines=True, dtype=False
        )  # fmt: skip
        assert frame["text"].tolist() == HOSTILE


def test_label_names_that_look_like_formulas_are_escaped_but_numbers_are_not(trained, tmp_path):
    _, model_dir = trained("full")
    export = tmp_path / "model"
    shutil.copytree(model_dir, export)
    names = ["=cmd|' /C calc'!A0", "-1"]  # ids in the trained model: bad, good
    label_map = {
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }
    (export / "label_map.json").write_text(json.dumps(label_map))
    source = write_csv(tmp_path / "in.csv", [["bad late crash twice", "x"], ["good hello", "x"]])
    target = tmp_path / "in.predictions.csv"

    predictor = Predictor.load(export)
    predict_file(predictor, source, target, progress=False)

    written = _read_raw_csv(target)
    predicted = predictor.frame(predictor.probabilities(["bad late crash twice", "good hello"]))
    assert set(predicted["label"]) == set(names)  # the model tells the two apart
    escaped = {names[0]: "'" + names[0], "-1": "-1"}
    assert written["label"].tolist() == [escaped[name] for name in predicted["label"]]
    assert "prob_=cmd|' /C calc'!A0" in written.columns  # a header starting with "p" is safe


def test_the_cli_reports_a_truncated_input_instead_of_aborting(trained, tmp_path):
    from tests.helpers import ftpipe

    _, model_dir = trained("full")
    source = _truncated_gz(tmp_path)

    done = ftpipe("predict", "-m", str(model_dir), "-i", str(source))

    assert done.returncode == 2, done.stderr
    assert "is truncated" in done.stderr and str(source) in done.stderr
    assert "Aborted" not in done.stderr + done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv.gz"]
