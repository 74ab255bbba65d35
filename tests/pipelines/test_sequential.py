"""`ftpipe run --no-kfp` when a stage fails (a whole run on a Ray cluster: tests/cluster)."""

from __future__ import annotations

import re

from tests.helpers import ftpipe


def test_a_failing_stage_ends_the_run_with_its_own_error(tiny_pipeline_config, tmp_path):
    result = ftpipe("run", "--no-kfp", "-c", str(tiny_pipeline_config), "data.label_column=nope",
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    first, failed = result.stdout.splitlines()  # recommend and the rest never started
    assert first == "[1/7] prep started"
    assert re.fullmatch(r"\[1/7\] prep failed after \d+s", failed)
    # prep's own paragraph, naming the key to fix.
    assert "has no column 'nope' (data.label_column)" in result.stderr
