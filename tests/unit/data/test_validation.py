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
    assert f"{train} has 1 invalid row (leakage: 1)" in message
    assert f"line 6: the same text is in the eval set ({held_out} line 3)" in message

    result = run_prep(make_config(train=str(train), eval=str(held_out), on_error="drop"))
    assert result.stats["splits"]["train"]["dropped"] == {"leakage": 1}
    assert result.stats["splits"]["train"]["rows"] == len(GOOD) - 1
    assert result.stats["splits"]["eval"]["rows"] == 3


def test_eval_label_never_seen_in_training_is_named(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", GOOD)
    held_out = write_csv(tmp_path / "eval.csv", [["fine", "good"], ["meh", "neutral"]])
    with pytest.raises(DataError, match=r"eval.csv has 1 invalid row .*line 3: label 'neutral'"):
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


def kept_texts(result) -> set[str]:
    import pyarrow.parquet as pq

    return {
        row["text"]
        for split in ("train", "eval")
        for row in pq.read_table(result.output_dir / split).to_pylist()
    }


def test_drop_removes_exactly_the_conflicting_rows_after_duplicates(tmp_path, make_config):
    # Exact duplicates come first in the file, so any stale row index would hit other rows.
    rows = [*GOOD[:4], GOOD[0], GOOD[1], ["both ways", "good"], *GOOD[4:], ["both ways", "bad"]]
    train = write_csv(tmp_path / "train.csv", rows)
    result = run_prep(make_config(train=str(train), on_error="drop"))
    assert result.stats["splits"]["train"]["dropped"] == {"duplicate": 2, "conflicting_label": 2}
    assert kept_texts(result) == {text for text, _ in GOOD}


def test_nested_json_values_are_malformed_rows(tmp_path, make_config):
    records = [{"text": t, "label": lab} for t, lab in GOOD]
    records.append({"text": {"a": 1}, "label": "good"})
    records.append({"text": "fine text", "label": ["good"]})
    train = write_jsonl(tmp_path / "train.jsonl", records)
    with pytest.raises(DataError) as info:
        run_prep(make_config(train=str(train)))
    message = str(info.value)
    assert "line 21: column 'text' holds a dict, not text" in message
    assert "line 22: column 'label' holds a list, not text" in message
    result = run_prep(make_config(train=str(train), on_error="drop"))
    assert result.stats["splits"]["train"]["dropped"] == {"malformed": 2}
    assert result.stats["labels"] == ["bad", "good"]


def test_nan_label_is_a_missing_label(tmp_path, make_config):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    texts = [t for t, _ in GOOD] + ["no label here"]
    labels = [1.0 if lab == "good" else 0.0 for _, lab in GOOD] + [float("nan")]
    pq.write_table(pa.table({"text": texts, "label": labels}), path)
    with pytest.raises(DataError, match=r"row 21: label in 'label' is missing"):
        run_prep(make_config(train=str(path)))
    result = run_prep(make_config(train=str(path), on_error="drop"))
    assert result.stats["labels"] == ["0", "1"]


def test_a_field_over_the_csv_module_limit_is_just_an_oversize_row(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", [*GOOD, ["x" * 200_000, "good"]])
    with pytest.raises(DataError, match=r"line 22: 200000 characters, over data.max_chars=20000"):
        run_prep(make_config(train=str(train)))
    result = run_prep(make_config(train=str(train), on_error="drop"))
    assert result.stats["splits"]["train"]["dropped"] == {"too_long": 1}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b"text,text,label\na,b,good\n",
            r"line 1 \(the header\) repeats the column name\(s\) 'text'",
        ),
        (b"text,label\n", r"has no data rows"),
        (b"", r"has no data rows"),
        ("text,label\nhello,good\n".encode("utf-16"), r"is UTF-16 encoded\. Re-save it as UTF-8"),
        (b'text,label\nfine,good\n"never closed,bad\n', r"line 3 is not valid CSV: unexpected end"),
    ],
    ids=["repeated-header", "header-only", "empty-file", "utf-16", "unclosed-quote"],
)
def test_unusable_files_are_named_with_a_fix(tmp_path, make_config, content, expected):
    train = tmp_path / "train.csv"
    train.write_bytes(content)
    with pytest.raises(DataError, match=expected) as info:
        run_prep(make_config(train=str(train)))
    assert str(train) in str(info.value)


def test_eval_that_is_the_train_file_is_refused(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", GOOD)
    with pytest.raises(DataError, match=r"holds the same bytes as data.train"):
        run_prep(make_config(train=str(train), eval=str(train)))


def test_leakage_that_empties_a_class_names_it(tmp_path, make_config):
    rows = [*GOOD, ["the only meh row", "meh"]]
    train = write_csv(tmp_path / "train.csv", rows)
    held_out = write_csv(tmp_path / "eval.csv", [["the only meh row", "meh"], ["fine", "good"]])
    with pytest.raises(
        DataError, match=r"Eval label\(s\) 'meh' in .*eval.csv have no training rows"
    ):
        run_prep(make_config(train=str(train), eval=str(held_out), on_error="drop"))


def test_empty_eval_file_message_points_at_the_eval_file(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", GOOD)
    held_out = write_csv(tmp_path / "eval.csv", [["", "good"]])
    with pytest.raises(DataError, match=r"eval set is empty after validation\. Add rows to"):
        run_prep(make_config(train=str(train), eval=str(held_out), on_error="drop"))


def test_kept_duplicates_stay_on_one_side_of_the_split(tmp_path, make_config):
    import pyarrow.parquet as pq

    rows = [row for row in GOOD for _ in range(3)]  # every text three times
    train = write_csv(tmp_path / "train.csv", rows)
    result = run_prep(make_config(train=str(train), duplicates="keep", eval_fraction=0.3))
    sides = {
        split: {r["text"] for r in pq.read_table(result.output_dir / split).to_pylist()}
        for split in ("train", "eval")
    }
    assert sides["train"].isdisjoint(sides["eval"])
    assert result.stats["splits"]["eval"]["rows"] % 3 == 0


def test_eval_label_error_says_where_the_allowed_labels_came_from(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", GOOD)
    held_out = write_csv(tmp_path / "eval.csv", [["fine", "good"], ["meh", "neutral"]])
    with pytest.raises(DataError, match=r"\(the labels in .*train.csv\)"):
        run_prep(make_config(train=str(train), eval=str(held_out)))
    with pytest.raises(DataError, match=r"not one of bad, good \(data.labels\)"):
        run_prep(make_config(train=str(train), eval=str(held_out), labels=["good", "bad"]))
