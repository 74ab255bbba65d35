"""Prep end to end on small files: outputs, split, label map, stats, fingerprint."""

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ftpipe.data import run_prep
from ftpipe.data.split import stratified_split
from ftpipe.errors import DataError
from ftpipe.tasks.labels import LabelMap
from tests.helpers import balanced_rows, write_csv

# With the tiny WordPiece vocab each row's tokens are known exactly:
#   [CLS] my order is late [SEP]                      6 tokens, 4 pieces, 4 words
#   [CLS] my order ##s was late [UNK] [SEP]           8 tokens, 6 pieces, 5 words, 1 unknown
#   [CLS] hello help [SEP]                            4 tokens, 2 pieces, 2 words
#   [CLS] the card was charged twice please help [SEP] 9 tokens, 7 pieces, 7 words
KNOWN = [
    ["my order is late", "bad"],
    ["my orders was late xyz", "bad"],
    ["hello help", "good"],
    ["the card was charged twice please help", "good"],
]


def read_split(directory: Path):
    return pq.read_table(sorted(directory.glob("part-*.parquet"))).to_pylist()


def test_stats_count_tokens_truncation_and_unknowns_exactly(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", KNOWN)
    held_out = write_csv(tmp_path / "eval.csv", [["help", "good"], ["late", "bad"]])
    result = run_prep(make_config(train=str(train), eval=str(held_out), max_length=8))
    stats = result.stats["splits"]["train"]
    assert stats["rows"] == 4
    assert stats["rows_per_label"] == {"bad": 2, "good": 2}
    assert stats["token_length"] == {
        "p50": 7.0,
        "p90": 8.7,
        "p95": 8.85,
        "p99": 8.97,
        "mean": 6.75,
        "max": 9,
    }
    assert stats["truncated_share"] == 0.25
    assert stats["unknown_token_rate"] == round(1 / 19, 6)
    assert stats["pieces_per_word"] == round(19 / 18, 6)
    on_disk = json.loads((result.output_dir / "stats.json").read_text())
    assert on_disk == result.stats


def test_truncation_keeps_special_tokens_and_max_length(tmp_path, make_config, tiny_tokenizer_dir):
    train = write_csv(tmp_path / "train.csv", KNOWN)
    held_out = write_csv(tmp_path / "eval.csv", [["help", "good"], ["late", "bad"]])
    result = run_prep(make_config(train=str(train), eval=str(held_out), max_length=8))
    rows = read_split(result.output_dir / "train")
    vocab = json.loads((tiny_tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"]
    longest = rows[3]["input_ids"]
    assert len(longest) == 8
    assert longest[0] == vocab["[CLS]"] and longest[-1] == vocab["[SEP]"]
    assert [len(r["input_ids"]) for r in rows] == [6, 8, 4, 8]


def test_outputs_hold_ids_labels_and_source_rows(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", balanced_rows(10, ("good", "bad", "meh")))
    result = run_prep(make_config(train=str(train)))
    names = {p.name for p in result.output_dir.iterdir()}
    assert names == {"train", "eval", "label_map.json", "stats.json", "fingerprint.json"}
    labels = LabelMap.load(result.output_dir / "label_map.json")
    assert labels.names == ("bad", "good", "meh")
    rows = read_split(result.output_dir / "train") + read_split(result.output_dir / "eval")
    assert len(rows) == 30
    for row in rows:
        # Each stored label id maps back to the label written on that source line.
        line = int(row["location"].split()[1])
        assert labels.names[row["label"]] == balanced_rows(10, ("good", "bad", "meh"))[line - 2][1]
        assert row["input_ids"][0] == 2  # [CLS]


def test_split_is_stratified_seeded_and_disjoint(tmp_path, make_config):
    rows = balanced_rows(30, ("good", "bad")) + balanced_rows(10, ("rare",))
    train = write_csv(tmp_path / "train.csv", rows)
    result = run_prep(make_config("seed=3", train=str(train), eval_fraction=0.2))
    held = read_split(result.output_dir / "eval")
    kept = read_split(result.output_dir / "train")
    names = result.stats["labels"]
    assert Counter(names[r["label"]] for r in held) == {"good": 6, "bad": 6, "rare": 2}
    assert {r["text"] for r in held}.isdisjoint({r["text"] for r in kept})
    assert len(held) + len(kept) == len(rows)


def test_split_is_deterministic_and_depends_on_seed():
    labels = [i % 3 for i in range(300)]
    first = stratified_split(labels, 0.1, seed=1)
    assert stratified_split(labels, 0.1, seed=1) == first
    assert stratified_split(labels, 0.1, seed=2) != first
    assert len(first[1]) == 30


def test_rare_class_keeps_a_row_on_each_side():
    train_idx, eval_idx = stratified_split([0] * 50 + [1, 1], 0.1, seed=0)
    assert sum(1 for i in eval_idx if i >= 50) == 1
    assert sum(1 for i in train_idx if i >= 50) == 1


@pytest.mark.parametrize(
    ("declared", "observed", "expected"),
    [
        (None, ["10", "2", "9", "2"], ("2", "9", "10")),
        (None, ["refund", "billing", "shipping"], ("billing", "refund", "shipping")),
        (["pos", "neg"], ["neg", "pos"], ("pos", "neg")),
    ],
)
def test_label_map_order_is_stable(tmp_path, declared, observed, expected):
    labels = LabelMap.build(declared, observed)
    assert labels.names == expected
    labels.save(tmp_path / "m.json")
    assert LabelMap.load(tmp_path / "m.json") == labels
    assert labels.to_json()["label2id"] == {name: i for i, name in enumerate(expected)}


def test_rerun_gives_byte_identical_outputs_and_fingerprint(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", balanced_rows(20))
    first = run_prep(make_config(train=str(train), output_dir=str(tmp_path / "a")))
    second = run_prep(make_config(train=str(train), output_dir=str(tmp_path / "b")))
    assert first.fingerprint == second.fingerprint
    files = sorted(
        p.relative_to(first.output_dir) for p in first.output_dir.rglob("*") if p.is_file()
    )
    assert files == sorted(
        p.relative_to(second.output_dir) for p in second.output_dir.rglob("*") if p.is_file()
    )
    for name in files:
        assert (first.output_dir / name).read_bytes() == (second.output_dir / name).read_bytes(), (
            name
        )
    recorded = json.loads((first.output_dir / "fingerprint.json").read_text())
    assert recorded["fingerprint"] == first.fingerprint
    assert recorded["inputs"]["train"]["source"] == str(train)


def test_fingerprint_tracks_bytes_and_prep_config_but_not_paths(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", balanced_rows(20))
    base = run_prep(make_config(train=str(train))).fingerprint
    moved = tmp_path / "moved.csv"
    moved.write_bytes(train.read_bytes())
    assert (
        run_prep(make_config(train=str(moved), output_dir=str(tmp_path / "x"))).fingerprint == base
    )
    assert run_prep(make_config(train=str(train), max_length=32)).fingerprint != base
    assert run_prep(make_config("seed=1", train=str(train))).fingerprint != base
    train.write_bytes(train.read_bytes().replace(b"number 3", b"number 33"))
    assert run_prep(make_config(train=str(train))).fingerprint != base


def test_pairs_store_token_types_and_fit_max_length(tmp_path, make_config):
    rows = [
        [f"my order {i}", "the card was charged twice please help " * 3, lab]
        for i, lab in enumerate(["good", "bad"] * 5)
    ]
    train = write_csv(tmp_path / "p.csv", rows, header=["a", "b", "label"])
    result = run_prep(make_config(train=str(train), text_column="a", text_pair_column="b"))
    for row in read_split(result.output_dir / "train"):
        assert len(row["input_ids"]) == 16
        assert len(row["token_type_ids"]) == 16
        assert row["token_type_ids"][0] == 0 and row["token_type_ids"][-1] == 1
        assert row["text_pair"].startswith("the card")


def test_large_splits_are_sharded(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", balanced_rows(25))
    result = run_prep(make_config(train=str(train), shard_rows=10, eval_fraction=0.2))
    shards = sorted((result.output_dir / "train").glob("part-*.parquet"))
    assert [s.name for s in shards] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
        "part-00003.parquet",
    ]
    assert len(read_split(result.output_dir / "train")) == 40


def test_failed_rerun_keeps_the_previous_outputs(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", balanced_rows(10))
    first = run_prep(make_config(train=str(train)))
    before = (first.output_dir / "stats.json").read_bytes()
    write_csv(train, [*balanced_rows(10), ["", "good"]])
    with pytest.raises(DataError):
        run_prep(make_config(train=str(train)))
    assert (first.output_dir / "stats.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unloadable_model_is_a_clear_error(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", balanced_rows(5))
    with pytest.raises(DataError, match=r"looks like a local path, but there is no such directory"):
        run_prep(make_config(f"model.name={tmp_path / 'no-model-here'}", train=str(train)))


def test_unreachable_hub_model_is_one_clear_paragraph(tmp_path, make_config, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train = write_csv(tmp_path / "train.csv", balanced_rows(5))
    with pytest.raises(DataError) as info:
        run_prep(make_config("model.name=some-org/not-cached-model", train=str(train)))
    message = str(info.value)
    assert message.startswith("Cannot load the tokenizer of model.name='some-org/not-cached-model'")
    assert "\n" not in message and ".." not in message


def test_output_dir_that_prep_did_not_write_is_refused(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", balanced_rows(5))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"non-empty directory that prep did not write"):
        run_prep(make_config(train=str(train), output_dir=str(foreign)))
    assert (foreign / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(DataError, match=r"is a file"):
        run_prep(make_config(train=str(train), output_dir=str(a_file)))


def test_output_dir_holding_an_input_is_refused(tmp_path, make_config):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    train = write_csv(data_dir / "train.csv", balanced_rows(5))
    with pytest.raises(DataError, match=r"contains the input"):
        run_prep(make_config(train=str(train), output_dir=str(tmp_path)))
    assert train.exists()


def test_rerun_replaces_its_own_outputs(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", balanced_rows(10))
    run_prep(make_config(train=str(train)))
    result = run_prep(make_config(train=str(train), max_length=32))
    assert result.stats["max_length"] == 32
    assert json.loads((result.output_dir / "stats.json").read_text())["max_length"] == 32


def test_label_map_treats_only_ascii_digits_as_integers():
    assert LabelMap.build(None, ["²", "1", "10"]).names == ("1", "10", "²")
