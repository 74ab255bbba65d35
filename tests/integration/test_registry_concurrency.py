"""Eight processes register and promote at once against one SQLite store.

Afterwards exactly one champion exists, no version is lost, and the gate's decisions form one
chain: each was taken against the champion of the moment, never against a stale one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from ftpipe.config import apply_overrides
from ftpipe.config.load import validate_config
from ftpipe.registry.client import connect, experiment_id
from tests.helpers import REPO

pytestmark = pytest.mark.integration
PROCESSES = 8

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from mlflow import MlflowClient
from ftpipe.config.load import validate_config
from ftpipe.registry.evidence import evaluation_tags
from ftpipe.registry.promote import promote
from ftpipe.registry.tracking import log_evaluation
from ftpipe.registry.versions import add_version
from tests.unit.registry.helpers import corrupt, synthetic_predictions, write_evaluation

config = validate_config(json.loads(sys.argv[1]))
index, root = int(sys.argv[2]), Path(sys.argv[3])
labels = np.random.default_rng(0).integers(0, 3, 600)
predicted = corrupt(labels, 0.55 + 0.05 * index, 3, seed=index)  # a different quality each
(root / f"ready-{index}").touch()
while not (root / "go").exists():  # start together, imports done
    time.sleep(0.01)
frame = synthetic_predictions(labels, predicted, ("a", "b", "c"))
evaluation = write_evaluation(root / f"eval-{index}", frame, "f" * 64)
evaluation.run_id = log_evaluation(evaluation, config)
client = MlflowClient(config.registry.tracking_uri)
version = add_version(client, config.registry.model_name, f"runs:/{evaluation.run_id}/model",
                      evaluation.run_id, evaluation_tags(evaluation))
result = promote(config, str(version.version))
print(json.dumps({"version": str(version.version), "changed": result.changed}))
"""


@pytest.mark.slow
def test_concurrent_registrations_and_promotions_leave_one_champion_and_every_version(tmp_path):
    raw = {
        "data": {"train": "unused.csv"},
        "registry": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "model_name": "racing", "experiment_name": "race"},
        "promote": {"bootstrap_samples": 300},
    }  # fmt: skip
    config = validate_config(apply_overrides(raw, []))
    # Migrate the fresh store once; the children then race on everything else.
    client = connect(config.registry)
    client.create_experiment("race", artifact_location=str(tmp_path / "artifacts"))
    assert experiment_id(client, "race")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                json.dumps(config.model_dump(mode="json")),
                str(i),
                str(tmp_path),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < PROCESSES and time.monotonic() < deadline:
        if any(c.poll() not in (None, 0) for c in children):
            break
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [c.communicate(timeout=180) for c in children]
    for child, (_, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr[-3000:]
    reported = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]

    client = MlflowClient(config.registry.tracking_uri)
    found = client.search_model_versions("name = 'racing'")
    # Aliases come with single reads only (search leaves them empty).
    versions = [client.get_model_version("racing", str(v.version)) for v in found]
    assert sorted(int(v.version) for v in versions) == list(range(1, PROCESSES + 1))
    assert sorted(r["version"] for r in reported) == sorted(str(v.version) for v in versions)
    champions = [v for v in versions if "champion" in v.aliases]
    assert len(champions) == 1
    # One decision at a time: the sequence numbers are distinct, and each decision compared
    # with the champion that the previous promotion left.
    decided = sorted(versions, key=lambda v: int(v.tags["ftpipe.gate.sequence"]))
    assert [int(v.tags["ftpipe.gate.sequence"]) for v in decided] == list(range(1, PROCESSES + 1))
    current = "none"
    for v in decided:
        assert v.tags["ftpipe.gate.champion_version"] == current, v.tags
        if v.tags["ftpipe.gate.decision"] == "promoted":
            current = str(v.version)
    assert str(champions[0].version) == current
    assert client.search_registered_models("name LIKE 'racing.%'") == []  # the lock is gone
