"""`ftpipe run --no-kfp` when a stage fails (a whole run on a Ray cluster: tests/cluster)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipelines.sequential import STAGES
from tests.helpers import ftpipe


def test_a_failing_stage_ends_the_run_with_its_own_error(tiny_pipeline_config, tmp_path):
    result = ftpipe("run", "--no-kfp", "-c", str(tiny_pipeline_config), "data.label_column=nope",
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    first, failed, *table = result.stdout.splitlines()  # recommend and the rest never started
    assert first == "[1/7] prep started"
    assert re.fullmatch(r"\[1/7\] prep failed after \d+s", failed)
    assert table[0].split() == ["stage", "state", "time", "result"]
    assert [line.split()[:2] for line in table[1:-1]] == [
        ["prep", "failed"],
        *([name, "skipped"] for name in STAGES[1:]),
    ]
    # prep's own paragraph, naming the key to fix, and the log with the rest.
    assert "error: stage prep failed: " in result.stderr
    assert "has no column 'nope' (data.label_column)" in result.stderr
    root = Path(yaml.safe_load(tiny_pipeline_config.read_text())["pipeline"]["local_root"])
    (log,) = root.glob("ftpipe-finetune-*/run.log")
    assert table[-1] == f"Full log: {log}"
    assert result.stderr.endswith(f"The full log: {log}\n")
