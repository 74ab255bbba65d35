"""Which run in storage a rerun resumes, and how storage paths read back as locations."""

from __future__ import annotations

from pathlib import Path

from ftpipe.train.run_storage import FINISHED, RunStorage


def make_run(root: Path, name: str, *entries: str) -> None:
    for entry in entries:
        (root / name / entry).mkdir(parents=True)


def test_the_newest_unfinished_checkpointed_run_of_the_config_is_resumed(tmp_path):
    storage = RunStorage.open(tmp_path)
    make_run(tmp_path, "train-aaaa-20261201-010000", "checkpoint_1")
    make_run(tmp_path, "train-aaaa-20261201-020000", "checkpoint_1", "checkpoint_2")
    make_run(tmp_path, "train-bbbb-20261201-030000", "checkpoint_1")  # another config

    assert storage.unfinished("train-aaaa") == "train-aaaa-20261201-020000"


def test_a_finished_run_or_one_without_a_checkpoint_is_not_resumed(tmp_path):
    storage = RunStorage.open(tmp_path)
    make_run(tmp_path, "train-aaaa-20261201-010000", "checkpoint_1")
    make_run(tmp_path, "train-aaaa-20261201-020000", "checkpoint_1")
    storage.mark_finished("train-aaaa-20261201-020000")
    assert (tmp_path / "train-aaaa-20261201-020000" / FINISHED).is_file()
    assert storage.unfinished("train-aaaa") is None  # the newest finished: start afresh

    make_run(tmp_path, "train-aaaa-20261201-030000", "logs")  # killed before a checkpoint
    assert storage.unfinished("train-aaaa") is None
    assert RunStorage.open(tmp_path / "absent").unfinished("train-aaaa") is None


def test_a_relative_path_is_made_absolute_and_a_uri_keeps_its_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = RunStorage.open("runs")
    assert (local.location, local.is_object_store) == (str(tmp_path / "runs"), False)
    assert local.reach(str(tmp_path / "runs/x")) == str(tmp_path / "runs/x")

    s3 = RunStorage("s3://bucket/prefix", object(), "bucket/prefix")
    assert s3.uri("train-1") == "s3://bucket/prefix/train-1"
    assert (
        s3.reach("bucket/prefix/train-1/checkpoint_1") == "s3://bucket/prefix/train-1/checkpoint_1"
    )
