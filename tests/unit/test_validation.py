"""One table of bad inputs: each must fail naming the file and row (or column), and each
row-level problem must instead be dropped and counted under data.on_error=drop."""

from pathlib import Path

import pytest

from ftpipe.data import run_prep
from ftpipe.errors import DataError
from tests.helpers import balanced_rows, write_csv, write_jsonl

GOOD = balanced_rows(10)  # lines 2..21 of the file; a bad row appended lands on line 22


def csv_bytes(rows, header=("text", "label")) -> bytes:
    lines = [",".join(header)] if header else []
    lines += [",".join(row) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


# id, train file bytes, config overrides, message fragments, drop kind (None: always fatal)
CASES = [
    (
        "missing-text-column",
        csv_bytes(GOOD, header=("sentence", "label")),
        {},
        ["no column 'text' (data.text_column)", "its columns are 'sentence', 'label'"],
        None,
    ),
    (
        "missing-label-column",
        csv_bytes(GOOD, header=("text", "sentiment")),
        {},
        ["no column 'label' (data.label_column)", "'sentiment'"],
        None,
    ),
    (
        "empty-text",
        csv_bytes([*GOOD, ["", "good"]]),
        {},
        ["line 22: text in 'text' is empty"],
        "empty_text",
    ),
    (
        "whitespace-text",
        csv_bytes([*GOOD, ["   ", "bad"]]),
        {},
        ["line 22: text in 'text' is empty"],
        "empty_text",
    ),
    (
        "null-label",
        csv_bytes([*GOOD, ["a lonely row", ""]]),
        {},
        ["line 22: label in 'label' is missing"],
        "null_label",
    ),
    (
        "short-row",
        csv_bytes([*GOOD]) + b"no label field at all\n",
        {},
        ["line 22: label in 'label' is missing"],
        "null_label",
    ),
    (
        "undeclared-label",
        csv_bytes([*GOOD, ["what is this", "spam"]]),
        {"labels": ["bad", "good"]},
        ["line 22: label 'spam' is not one of bad, good"],
        "unknown_label",
    ),
    (
        "not-utf8",
        csv_bytes(GOOD) + b"caf\xe9 latte,good\n",
        {},
        ["line 22: bytes that are not valid UTF-8", "re-save the file as UTF-8"],
        "not_utf8",
    ),
    (
        "over-size-limit",
        csv_bytes([*GOOD, ["x" * 500, "good"]]),
        {"max_chars": 100},
        ["line 22: 500 characters, over data.max_chars=100"],
        "too_long",
    ),
    (
        "extra-fields",
        csv_bytes(GOOD) + b"one,two,good\n",
        {},
        ["line 22: 1 more field(s) than the header"],
        "malformed",
    ),
    (
        "conflicting-labels",
        csv_bytes([*GOOD, ["same words twice", "good"], ["same words twice", "bad"]]),
        {},
        ["line 22: text 'same words twice' has conflicting labels", "line 23"],
        "conflicting_label",
    ),
    (
        "duplicates-when-refused",
        csv_bytes([*GOOD, GOOD[3]]),
        {"duplicates": "fail"},
        ["line 22: exact duplicate of line 5", "data.duplicates=drop"],
        None,
    ),
    (
        "single-class",
        csv_bytes([[f"text {i}", "good"] for i in range(10)]),
        {},
        ["has only the label 'good'", "at least two classes"],
        None,
    ),
]


@pytest.mark.parametrize(
    ("content", "data", "fragments", "kind"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_fails_naming_file_and_row(
    tmp_path: Path, make_config, content, data, fragments, kind
):
    train = tmp_path / "train.csv"
    train.write_bytes(content)
    with pytest.raises(DataError) as info:
        run_prep(make_config(train=str(train), **data))
    message = str(info.value)
    assert str(train) in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message
    if kind is not None:
        assert "data.on_error=drop" in message or "data.duplicates=drop" in message
    assert not (tmp_path / "prep").exists(), "a failed prep must not leave outputs behind"


@pytest.mark.parametrize(
    ("content", "data", "kind"),
    [(c[1], c[2], c[4]) for c in CASES if c[4] is not None],
    ids=[c[0] for c in CASES if c[4] is not None],
)
def test_drop_policy_removes_and_counts_the_bad_rows(tmp_path, make_config, content, data, kind):
    train = tmp_path / "train.csv"
    train.write_bytes(content)
    result = run_prep(make_config(train=str(train), on_error="drop", **data))
    dropped = result.stats["splits"]["train"]["dropped"]
    expected = 2 if kind == "conflicting_label" else 1
    assert dropped == {kind: expected}
    kept = sum(s["rows"] for s in result.stats["splits"].values())
    assert kept == len(GOOD)


def test_exact_duplicates_are_dropped_by_default_with_a_count(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", [*GOOD, GOOD[0], GOOD[1], GOOD[1]])
    result = run_prep(make_config(train=str(train)))
    assert result.stats["splits"]["train"]["dropped"] == {"duplicate": 3}


def test_duplicates_can_be_kept(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", [*GOOD, GOOD[0]])
    result = run_prep(make_config(train=str(train), duplicates="keep"))
    assert sum(s["rows"] for s in result.stats["splits"].values()) == len(GOOD) + 1


def test_leakage_between_train_and_eval_names_both_places(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", GOOD)
    held_out = write_csv(
        tmp_path / "eval.csv", [["held out one", "good"], GOOD[4], ["another", "bad"]]
    )
    with pytest.raises(DataError) as info:
        run_prep(make_config(train=str(train), eval=str(held_out)))
    message = str(info.value)
    assert f"{train} has 1 invalid rows (leakage: 1)" in message
    assert f"line 6: the same text is in the eval set ({held_out} line 3)" in message

    result = run_prep(make_config(train=str(train), eval=str(held_out), on_error="drop"))
    assert result.stats["splits"]["train"]["dropped"] == {"leakage": 1}
    assert result.stats["splits"]["train"]["rows"] == len(GOOD) - 1
    assert result.stats["splits"]["eval"]["rows"] == 3


def test_eval_label_never_seen_in_training_is_named(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", GOOD)
    held_out = write_csv(tmp_path / "eval.csv", [["fine", "good"], ["meh", "neutral"]])
    with pytest.raises(DataError, match=r"eval.csv has 1 invalid rows .*line 3: label 'neutral'"):
        run_prep(make_config(train=str(train), eval=str(held_out)))


def test_invalid_json_line_is_named(tmp_path, make_config):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": t, "label": lab} for t, lab in GOOD])
    with train.open("a") as handle:
        handle.write('{"text": "broken", "label": \n')
    with pytest.raises(DataError, match=r"line 21: it is not valid JSON"):
        run_prep(make_config(train=str(train)))


def test_missing_input_file_is_named(tmp_path, make_config):
    with pytest.raises(DataError, match=r"nothere.csv does not exist"):
        run_prep(make_config(train=str(tmp_path / "nothere.csv")))


def test_unknown_extension_says_how_to_fix(tmp_path, make_config):
    path = tmp_path / "train.txt"
    path.write_text("text,label\n")
    with pytest.raises(DataError, match=r"set data.format"):
        run_prep(make_config(train=str(path)))
