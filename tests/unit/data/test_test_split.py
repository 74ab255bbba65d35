"""The test split (issue 19): held out by prep, stratified, seeded, disjoint, fingerprinted."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from ftpipe.data import run_prep
from ftpipe.data.prep import input_fingerprint
from ftpipe.data.prepared import PrepDir, load_prepared
from ftpipe.errors import ConfigError, DataError
from tests.helpers import balanced_rows, write_csv


def texts(result, split: str) -> list[str]:
    return pq.read_table(result.output_dir / split).column("text").to_pylist()


def labelled(result, split: str) -> Counter:
    names = result.stats["labels"]
    return Counter(names[i] for i in pq.read_table(result.output_dir / split)["label"].to_pylist())


@pytest.fixture
def rows():
    return balanced_rows(40, ("good", "bad")) + balanced_rows(20, ("rare",))


def test_test_fraction_holds_out_a_stratified_seeded_split_disjoint_from_train_and_eval(
    tmp_path, make_config, rows
):
    train = write_csv(tmp_path / "train.csv", rows)

    def prep(seed: int, output: str):
        config = make_config(
            f"seed={seed}", train=str(train), eval_fraction=0.2, test_fraction=0.25,
            output_dir=str(tmp_path / output),
        )  # fmt: skip
        return run_prep(config)

    result = prep(3, "prep")

    assert {p.name for p in result.output_dir.iterdir()} == {
        "train", "eval", "test", "label_map.json", "stats.json", "fingerprint.json",
    }  # fmt: skip
    # Both shares are of the whole: 25% and 20% of each class.
    assert labelled(result, "test") == {"good": 10, "bad": 10, "rare": 5}
    assert labelled(result, "eval") == {"good": 8, "bad": 8, "rare": 4}
    sides = {split: set(texts(result, split)) for split in ("train", "eval", "test")}
    assert sides["test"].isdisjoint(sides["train"] | sides["eval"])
    assert sides["train"].isdisjoint(sides["eval"])
    assert sum(map(len, sides.values())) == len(rows)
    assert result.stats["splits"]["test"]["rows"] == 25
    assert PrepDir(result.output_dir).has_test

    # The same seed gives the same test split; another seed another one.
    assert texts(prep(3, "again"), "test") == texts(result, "test")
    assert set(texts(prep(4, "other"), "test")) != sides["test"]


def test_the_test_split_stays_put_when_eval_fraction_changes(tmp_path, make_config, rows):
    # Models tuned with another eval_fraction are still gated on the same test set.
    train = write_csv(tmp_path / "train.csv", rows)
    first = run_prep(make_config(train=str(train), eval_fraction=0.1, test_fraction=0.2))
    second = run_prep(make_config(train=str(train), eval_fraction=0.3, test_fraction=0.2,
                                  output_dir=str(tmp_path / "second")))  # fmt: skip
    assert texts(first, "test") == texts(second, "test")
    assert len(texts(first, "eval")) < len(texts(second, "eval"))


def test_no_test_split_by_default_and_training_never_loads_it(tmp_path, make_config, rows):
    train = write_csv(tmp_path / "train.csv", rows)
    plain = run_prep(make_config(train=str(train)))
    assert not (plain.output_dir / "test").exists()
    assert not PrepDir(plain.output_dir).has_test
    # A config without a test split keeps the fingerprint it had before test splits existed.
    recorded = json.loads((plain.output_dir / "fingerprint.json").read_text())
    assert "test_fraction" not in recorded["data"] and "test" not in recorded["inputs"]
    with_test = run_prep(make_config(train=str(train), test_fraction=0.2,
                                     output_dir=str(tmp_path / "with-test")))  # fmt: skip
    assert set(load_prepared(with_test.output_dir).splits) == {"train", "eval"}


def test_fingerprint_covers_test_fraction_and_the_test_file(tmp_path, make_config, rows):
    train = write_csv(tmp_path / "train.csv", rows)
    test = write_csv(tmp_path / "test.csv", [["held for the gate", "good"], ["and this", "bad"]])
    other = write_csv(tmp_path / "other.csv", [["held for the gate", "good"], ["not this", "bad"]])
    configs = {
        "none": make_config(train=str(train)),
        "fraction": make_config(train=str(train), test_fraction=0.2),
        "fraction2": make_config(train=str(train), test_fraction=0.3),
        "file": make_config(train=str(train), test=str(test)),
        "other": make_config(train=str(train), test=str(other)),
    }
    prints = {name: input_fingerprint(config) for name, config in configs.items()}
    assert len(set(prints.values())) == len(prints)
    result = run_prep(configs["file"])
    assert result.fingerprint == prints["file"]
    recorded = json.loads((result.output_dir / "fingerprint.json").read_text())
    assert recorded["inputs"]["test"]["source"] == str(test)


def test_a_test_file_takes_its_texts_from_train_and_eval(tmp_path, make_config):
    good = balanced_rows(10, ("good", "bad"))
    train = write_csv(tmp_path / "train.csv", good)
    held = write_csv(tmp_path / "eval.csv", [good[3], ["only in eval", "good"], ["x y", "bad"]])
    test = write_csv(tmp_path / "test.csv", [good[5], good[3], ["only in test", "bad"]])

    with pytest.raises(DataError) as raised:
        run_prep(make_config(train=str(train), eval=str(held), test=str(test)))
    message = str(raised.value)
    assert "the same text is in the test set" in message and str(test) in message
    assert "which would inflate test metrics" in message

    result = run_prep(make_config(train=str(train), eval=str(held), test=str(test),
                                  on_error="drop"))  # fmt: skip
    splits = result.stats["splits"]
    assert splits["train"]["dropped"] == {"leakage": 2}  # good[3] and good[5]
    assert splits["eval"]["dropped"] == {"leakage": 1}  # good[3]
    assert splits["test"] == {**splits["test"], "rows": 3, "dropped": {}}
    assert set(texts(result, "test")).isdisjoint(texts(result, "train") + texts(result, "eval"))


def test_a_test_file_with_eval_split_off_train(tmp_path, make_config, rows):
    train = write_csv(tmp_path / "train.csv", rows)
    test = write_csv(tmp_path / "test.csv", [rows[0], ["brand new", "rare"]])
    result = run_prep(make_config(train=str(train), test=str(test), on_error="drop"))
    assert result.stats["splits"]["train"]["dropped"] == {"leakage": 1}
    assert texts(result, "test") == [rows[0][0], "brand new"]
    assert rows[0][0] not in texts(result, "train") + texts(result, "eval")


def test_kept_duplicates_stay_on_one_side_of_the_test_split(tmp_path, make_config, rows):
    train = write_csv(tmp_path / "train.csv", [row for row in rows for _ in range(2)])
    result = run_prep(make_config(train=str(train), duplicates="keep", test_fraction=0.3))
    test = texts(result, "test")
    assert set(test).isdisjoint(texts(result, "train") + texts(result, "eval"))
    assert all(count == 2 for count in Counter(test).values())


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"test": "t.csv", "test_fraction": 0.2}, r"data\.test .* and data\.test_fraction"),
        ({"eval_fraction": 0.5, "test_fraction": 0.5}, r"plus data\.test_fraction"),
        ({"test_fraction": 1.0}, r"data\.test_fraction"),
        ({"test_fraction": -0.1}, r"data\.test_fraction"),
    ],
)
def test_impossible_test_settings_are_refused(make_config, data, expected):
    with pytest.raises(ConfigError, match=expected) as raised:
        make_config(train="train.csv", **data)
    assert "\n" not in str(raised.value).strip()


def test_shares_are_only_summed_when_both_come_from_train(make_config):
    with pytest.raises(ConfigError, match=r"data\.eval_fraction \(0\.5\) plus data\.test_fraction"):
        make_config(train="train.csv", eval_fraction=0.5, test_fraction=0.6)
    # With eval or test given as a file, only one share comes off train: nothing to add up.
    eval_file = make_config(
        train="train.csv", eval="eval.csv", eval_fraction=0.5, test_fraction=0.6
    )
    assert (eval_file.data.eval, eval_file.data.test_fraction) == ("eval.csv", 0.6)
    test_file = make_config(train="train.csv", test="test.csv", eval_fraction=0.9)
    assert (test_file.data.test, test_file.data.eval_fraction) == ("test.csv", 0.9)


def test_a_test_file_that_is_a_copy_of_train_or_eval_is_refused(tmp_path, make_config, rows):
    train = write_csv(tmp_path / "train.csv", rows)
    held = write_csv(tmp_path / "eval.csv", rows[:6])
    with pytest.raises(DataError, match=r"data\.test .* holds the same bytes as data\.train"):
        run_prep(make_config(train=str(train), test=str(train)))
    copy = tmp_path / "copy.csv"
    copy.write_bytes(held.read_bytes())
    with pytest.raises(DataError, match=r"data\.test .* holds the same bytes as data\.eval"):
        run_prep(make_config(train=str(train), eval=str(held), test=str(copy)))


def test_an_empty_test_split_or_an_untrained_test_label_is_refused(tmp_path, make_config, rows):
    train = write_csv(tmp_path / "train.csv", rows)
    empty = write_csv(tmp_path / "test.csv", [["", "good"]])
    with pytest.raises(DataError, match=r"test set is empty after validation\. Add rows to"):
        run_prep(make_config(train=str(train), test=str(empty), on_error="drop"))
    unknown = write_csv(tmp_path / "unknown.csv", [["fine", "good"], ["meh", "neutral"]])
    with pytest.raises(DataError, match=r"neutral"):
        run_prep(make_config(train=str(train), test=str(unknown)))


def test_a_failed_prep_leaves_the_previous_outputs_and_their_test_split(
    tmp_path, make_config, rows
):
    train = write_csv(tmp_path / "train.csv", rows)
    first = run_prep(make_config(train=str(train), test_fraction=0.2))
    before = {p.relative_to(first.output_dir): p.read_bytes()
              for p in first.output_dir.rglob("*") if p.is_file()}  # fmt: skip
    bad = write_csv(tmp_path / "bad.csv", [["", "good"]])
    with pytest.raises(DataError):
        run_prep(make_config(train=str(train), test=str(bad)))
    after = {p.relative_to(first.output_dir): p.read_bytes()
             for p in first.output_dir.rglob("*") if p.is_file()}  # fmt: skip
    assert after == before and any(str(p).startswith("test/") for p in after)
    assert not list(tmp_path.glob(".prep.*"))


def test_prepared_data_is_refused_when_the_test_split_asked_for_differs(
    tmp_path, make_config, rows
):
    train = write_csv(tmp_path / "train.csv", rows)
    config = make_config(train=str(train), test_fraction=0.2)
    run_prep(config)
    PrepDir.check_config(config, "train")
    with pytest.raises(ConfigError, match=r"data\.test_fraction is 0\.0 here but was 0\.2"):
        PrepDir.check_config(make_config(train=str(train)), "train")
    test = write_csv(tmp_path / "test.csv", rows[:4])
    with pytest.raises(ConfigError, match=r"data\.test is .*test\.csv\" here but was null"):
        PrepDir.check_config(make_config(train=str(train), test=str(test)), "evaluate")


def test_an_output_directory_holding_the_test_file_is_refused(tmp_path, make_config, rows):
    train = write_csv(tmp_path / "train.csv", rows)
    (tmp_path / "prep").mkdir()
    test = write_csv(tmp_path / "prep" / "test.csv", rows[:4])
    with pytest.raises(DataError, match=r"contains the input .*test\.csv"):
        run_prep(make_config(train=str(train), test=str(test)))
