"""The session check that keeps tests out of the repository's `mlflow.db` and `outputs/`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO
from tests.isolation import Footprint


def test_a_footprint_names_every_file_added_removed_or_rewritten(tmp_path: Path):
    (tmp_path / "outputs" / "prep").mkdir(parents=True)
    (tmp_path / "mlflow.db").write_bytes(b"demo runs")
    (tmp_path / "outputs" / "prep" / "stats.json").write_text("{}")
    (tmp_path / "unrelated.txt").write_text("not guarded")
    before = Footprint.take(tmp_path)
    assert Footprint.take(tmp_path).changes_since(before) == []

    (tmp_path / "mlflow.db").write_bytes(b"demo runs + a test's FAILED run")
    (tmp_path / "outputs" / "train").mkdir()
    (tmp_path / "outputs" / "train" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "outputs" / "prep" / "stats.json").unlink()
    (tmp_path / "unrelated.txt").write_text("changed, but not the user's store")
    assert Footprint.take(tmp_path).changes_since(before) == [
        "added outputs/train/model.safetensors",
        "removed outputs/prep/stats.json",
        "changed mlflow.db",
    ]


def test_a_session_whose_test_writes_to_the_repository_store_fails_naming_the_file(
    tmp_path: Path,
):
    # A real pytest session of this suite's conftest, with one test that writes where a
    # config's relative default would: outputs/ under the repository. The file is removed
    # again by this test, whatever the session does.
    marker = REPO / "outputs" / f"isolation-check-{tmp_path.name}.txt"
    test = tmp_path / "test_careless.py"
    test.write_text(
        "from pathlib import Path\n\n"
        f"def test_writes_to_the_repository():\n"
        f"    Path({str(marker)!r}).parent.mkdir(exist_ok=True)\n"
        f"    Path({str(marker)!r}).write_text('oops')\n"
    )
    created_outputs = not (REPO / "outputs").exists()
    try:
        # The suite's conftest loaded as a plugin: the careless test lives outside tests/.
        command = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", str(test)]
        session = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        marker.unlink(missing_ok=True)
        if created_outputs:
            (REPO / "outputs").rmdir()
    assert session.returncode == 1, session.stdout[-2000:]
    assert "1 passed" in session.stdout
    assert f"added outputs/{marker.name}" in session.stdout, session.stdout[-2000:]
