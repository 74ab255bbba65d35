"""Tune and train never open the test split (issue 19).

After prep, the test split's files and directory lose every permission, and a real sweep and
a real training run (both through Ray) still succeed. As root, permissions bind only without
the capabilities that bypass them, so the commands run under `setpriv` without those.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftpipe.data.prepared import PrepDir
from tests.helpers import FTPIPE, train_config

pytestmark = pytest.mark.integration

BYPASS = "-dac_override,-dac_read_search"
"""The capabilities that let root read a file whatever its mode."""


def bound_by_permissions() -> list[str]:
    """A command prefix under which file permissions bind, also for root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a mode of 000 would not stop a read")
    return [setpriv, f"--inh-caps={BYPASS}", f"--bounding-set={BYPASS}"]


def run(prefix: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*prefix, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip


@pytest.mark.slow
def test_tune_and_train_succeed_with_the_test_split_unreadable(tmp_path, tiny_model_dir):
    config = train_config(
        tmp_path, tiny_model_dir, "data.test_fraction=0.2", "train.epochs=2",
        "tune.search=grid", "tune.num_trials=1", "tune.max_concurrent_trials=1",
        f"tune.output_dir={tmp_path / 'tune'}",
        f"registry.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "registry.log_system_metrics=false",
    )  # fmt: skip
    raw = config.model_dump(mode="json")
    raw["tune"]["search_space"] = {"train.lr": "choice([3.0e-3, 1.0e-3])"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    test_split = PrepDir(Path(config.data.output_dir)).split_path("test")
    shards = sorted(test_split.iterdir())
    assert shards, "prep wrote no test split"
    prefix = bound_by_permissions()
    try:
        for locked in (*shards, test_split):
            locked.chmod(0)
        # The lock holds for these commands: reading a shard fails.
        blocked = run(prefix, sys.executable, "-c", f"open({str(shards[0])!r}, 'rb')", cwd=tmp_path)
        assert blocked.returncode != 0 and "Permission denied" in blocked.stderr

        tune = run(prefix, *FTPIPE, "tune", "-c", str(path), cwd=tmp_path)
        assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-4000:]
        sweep = next((tmp_path / "tune").glob("sweep-*"))
        assert (sweep / "best.yaml").exists() and (sweep / "model" / "ftpipe.json").exists()

        train = run(prefix, *FTPIPE, "train", "-c", str(path), cwd=tmp_path)
        assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-4000:]
        assert (Path(config.train.output_dir) / "model" / "ftpipe.json").exists()
    finally:
        test_split.chmod(0o755)
        for shard in shards:
            shard.chmod(0o644)
    assert PrepDir(Path(config.data.output_dir)).has_test
