"""A prep killed while it writes leaves its staging directory; the next prep removes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ftpipe.config.load import validate_config
from ftpipe.data import run_prep
from ftpipe.data.prepared import PrepDir
from tests.helpers import balanced_rows, write_csv

pytestmark = pytest.mark.integration

RUN = (
    "import json, sys\n"
    "from ftpipe.config.load import validate_config\n"
    "from ftpipe.data import run_prep\n"
    "run_prep(validate_config(json.loads(sys.argv[1])))\n"
)


def test_killed_prep_leaves_staging_that_the_next_prep_removes(tmp_path, tiny_tokenizer_dir):
    rows = balanced_rows(30_000)
    train = write_csv(tmp_path / "train.csv", rows)
    raw = {
        "data": {"train": str(train), "output_dir": str(tmp_path / "prep"), "max_length": 16,
                 "shard_rows": 100},
        "model": {"name": str(tiny_tokenizer_dir)},
    }  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", RUN, json.dumps(raw)], env=env)
    deadline = time.monotonic() + 240
    staging: list = []
    while not staging and child.poll() is None and time.monotonic() < deadline:
        staging = list(tmp_path.glob(".prep.tmp-*"))
        time.sleep(0.005)
    assert staging, "prep finished (or timed out) before its staging directory was seen"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert staging[0].exists()
    assert not (tmp_path / "prep").exists()

    result = run_prep(validate_config(raw))
    assert not list(tmp_path.glob(".prep.*"))
    prep = PrepDir.open(result.output_dir)
    assert sum(prep.rows.values()) == len(rows)
