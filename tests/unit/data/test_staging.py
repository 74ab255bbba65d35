"""Orphaned staging directories (issue 20, defect 9): prep removes those of dead processes."""

from __future__ import annotations

import socket
import subprocess
import sys

from ftpipe.data import run_prep
from ftpipe.data.prep import remove_orphans
from tests.helpers import balanced_rows, write_csv


def _dead_pid() -> int:
    process = subprocess.run([sys.executable, "-c", "pass"], check=True)
    del process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_staging_of_a_dead_process_is_removed_by_the_next_prep(tmp_path, make_config):
    train = write_csv(tmp_path / "train.csv", balanced_rows(10))
    dead = _dead_pid()
    orphans = [
        tmp_path / f".prep.tmp-{dead}",
        tmp_path / f".prep.tmp-{socket.gethostname()}-{dead}",
        tmp_path / f".prep.old-{dead}",
    ]
    for orphan in orphans:
        (orphan / "train").mkdir(parents=True)
    result = run_prep(make_config(train=str(train)))
    assert not any(o.exists() for o in orphans)
    assert (result.output_dir / "fingerprint.json").exists()


def test_staging_of_a_live_or_foreign_process_is_kept(tmp_path):
    target = tmp_path / "prep"
    live = tmp_path / f".prep.tmp-{_live_pid()}"
    foreign = tmp_path / f".prep.tmp-another-host.example-{_dead_pid()}"
    unrelated = tmp_path / f".other.tmp-{_dead_pid()}"
    for directory in (live, foreign, unrelated):
        directory.mkdir()
    remove_orphans(target)
    assert live.exists() and foreign.exists() and unrelated.exists()


def _live_pid() -> int:
    import os

    return os.getpid()
