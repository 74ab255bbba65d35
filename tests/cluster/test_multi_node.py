"""`ftpipe train` and `ftpipe tune` on a real 3-node Ray cluster, checkpoints in a real S3.

The cluster (tests/cluster/services.py) is infra/'s shape on loopback: a head without work and
worker nodes `a` and `b` of 2 CPUs each. Every run is the `ftpipe` command a user types, with
`train.storage` on the S3 server, so no worker reads another's disk. An uninterrupted run is
the yardstick: a run that loses a node, or its driver, must end at the same step with the
same metrics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster.services import BIN, RayCluster, S3Server, wait_for
from tests.helpers import FTPIPE, train_config

pytestmark = pytest.mark.integration

STEPS = 42
"""60 training rows / 8 per step = 7 steps x 6 epochs."""
SETTINGS = ("train.batch_size=8", "train.eval_every_steps=5", "train.max_failures=3",
            "train.placement=SPREAD")  # fmt: skip
ONE_WORKER_A_NODE = "train.cpus_per_worker=1.5"
"""Of a node's 2 CPUs, a worker takes 1.5: a second worker needs the other node, while Ray
Train's own small actors still fit beside it."""
TOLERANCE = 1e-6
"""Same seed, data order, restored optimizer and RNG: the same model up to float noise."""


class Run:
    """One `ftpipe train` (or tune) of a tiny config on the cluster, its storage under `name`."""

    def __init__(self, tmp: Path, model: Path, s3: S3Server, cluster: RayCluster, name: str,
                 *overrides: str) -> None:  # fmt: skip
        self.tmp, self.s3, self.cluster, self.name = tmp, s3, cluster, name
        config = train_config(tmp, model, *SETTINGS, f"train.ray_address={cluster.address}",
                              f"train.storage=s3://{s3.bucket}/{name}",
                              f"registry.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
                              *overrides)  # fmt: skip
        self.config = tmp / "config.json"
        self.config.write_text(json.dumps(config.model_dump(mode="json")))
        self.log = tmp / "ftpipe.log"

    def start(self, command: str = "train", *args: str) -> subprocess.Popen:
        env = {**os.environ, **self.cluster.driver_env, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
        return subprocess.Popen([*FTPIPE, command, "--config", str(self.config), *args],
                                stdout=self.log.open("a"), stderr=subprocess.STDOUT,
                                env=env, cwd=self.tmp)  # fmt: skip

    def finish(self, process: subprocess.Popen) -> dict:
        """Wait for the command; its result.json."""
        assert process.wait(timeout=600) == 0, self.log.read_text()[-4000:]
        return json.loads((self.tmp / "train" / "result.json").read_text())

    def checkpoints(self) -> int:
        """Checkpoints in storage so far."""
        parts = [key.split("/") for key in self.s3.keys(f"{self.name}/")]
        return len({p[2] for p in parts if len(p) > 3 and p[2].startswith("checkpoint_")})


def worker_nodes(cluster: RayCluster) -> dict[str, str]:
    """Every Ray Train worker the cluster has run so far: actor id to node id."""
    listing = subprocess.run(
        [str(BIN / "ray"), "list", "actors", f"--address={cluster.address}", "--format=json",
         "--filter", "class_name=RayTrainWorker", "--limit=10000", "--detail"],
        capture_output=True, text=True, env={**os.environ, **cluster.driver_env}, check=True,
    )  # fmt: skip
    if not listing.stdout.startswith("["):  # "No resource in the cluster"
        return {}
    return {actor["actor_id"]: actor["node_id"] for actor in json.loads(listing.stdout)}


def new_worker_nodes(cluster: RayCluster, before: dict[str, str]) -> set[str]:
    return {node for actor, node in worker_nodes(cluster).items() if actor not in before}


def resumed_at_checkpoint(result: dict) -> None:
    """The run's last workers started at a checkpoint (every 5 steps and each 7-step epoch)."""
    start = result["final_metrics"]["start_step"]
    assert start > 0 and (start % 5 == 0 or start % 7 == 0), start


def same_metrics(result: dict, whole: dict) -> None:
    final, expected = result["final_metrics"], whole["final_metrics"]
    assert final["step"] == expected["step"] == STEPS
    for key in ("loss", "accuracy", "macro_f1"):
        assert final[key] == pytest.approx(expected[key], abs=TOLERANCE), key


@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny_model_dir, s3, cluster) -> tuple[dict, set[str]]:
    """The uninterrupted run: 2 workers spread over the nodes. (result.json, worker nodes)."""
    before = worker_nodes(cluster)
    run = Run(tmp_path_factory.mktemp("whole"), tiny_model_dir, s3, cluster, "whole",
              "train.num_workers=2")  # fmt: skip
    result = run.finish(run.start())
    return result, new_worker_nodes(cluster, before)


def test_spread_workers_sit_on_two_nodes_and_checkpoint_to_s3(whole, s3):
    result, nodes = whole
    assert len(nodes) == 2, nodes
    assert result["final_metrics"]["step"] == STEPS
    assert result["metrics"]["accuracy"] > 0.9
    keys = s3.keys("whole/")
    assert any("/checkpoint_" in key and key.endswith("model.safetensors") for key in keys)
    assert any(key.endswith("/ftpipe-finished") for key in keys)
    assert result["best_checkpoint"].startswith("s3://ftpipe/whole/")


def after_checkpoints(run: Run) -> None:
    """Wait until the run's first checkpoints are surely registered.

    A checkpoint directory appears in storage while it is being uploaded, and the controller
    registers it on its next poll of the workers; by the fourth, the first ones are (the run
    writes nine).
    """
    wait_for(lambda: run.checkpoints() >= 4, "a fourth checkpoint", timeout=300)


def losing_node_b(run: Run, cluster: RayCluster) -> dict:
    """Start the run, kill node b once checkpoints are in, and finish; node b then returns."""
    process = run.start()
    try:
        after_checkpoints(run)
        cluster.kill("b")
        return run.finish(process)
    finally:
        cluster.add_worker("b")


def test_a_dead_node_costs_a_restart_not_the_run(tmp_path, tiny_model_dir, s3, cluster, whole):
    run = Run(tmp_path, tiny_model_dir, s3, cluster, "node-kill", "train.num_workers=2")
    result = losing_node_b(run, cluster)
    # The restarted workers began at a checkpoint's step, both on the surviving node.
    resumed_at_checkpoint(result)
    assert result["final_metrics"]["workers"] == 2
    same_metrics(result, whole[0])


def test_a_killed_driver_resumes_from_storage_when_rerun(tmp_path, tiny_model_dir, s3, cluster,
                                                         whole):  # fmt: skip
    run = Run(tmp_path, tiny_model_dir, s3, cluster, "driver-kill", "train.num_workers=2")
    process = run.start()
    after_checkpoints(run)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "train" / "result.json").exists()
    time.sleep(2)  # the head notices the driver is gone and ends its workers

    result = run.finish(run.start())  # the same command again
    assert "Resuming s3://ftpipe/driver-kill/train-" in run.log.read_text()
    resumed_at_checkpoint(result)
    same_metrics(result, whole[0])


# Flaky on 2 cores: the elastic run sometimes starts with one worker (the policy starts with
# what fits at that moment), and then has nothing to shrink. make test-all runs it.
@pytest.mark.slow
def test_an_elastic_run_shrinks_to_one_worker_at_the_same_global_batch(
    tmp_path, tiny_model_dir, s3, cluster, whole
):
    run = Run(tmp_path, tiny_model_dir, s3, cluster, "elastic", "train.num_workers=[1, 2]",
              ONE_WORKER_A_NODE)  # fmt: skip
    cluster.wait_idle()  # an elastic run starts with the workers that fit at once
    result = losing_node_b(run, cluster)
    history = result["history"]
    assert (history[0]["workers"], history[0]["accumulation"]) == (2, 1)
    # After the node's loss, one worker does the two workers' rows in two micro-batches.
    assert (history[-1]["workers"], history[-1]["accumulation"]) == (1, 2)
    assert result["final_metrics"]["step"] == STEPS
    assert result["final_metrics"]["accuracy"] > 0.9


def test_a_sweep_runs_its_trials_on_both_nodes(tmp_path, tiny_model_dir, s3, cluster):
    before = worker_nodes(cluster)
    # The two concurrent trials of one worker each need both nodes.
    run = Run(tmp_path, tiny_model_dir, s3, cluster, "sweep", "train.num_workers=1",
              ONE_WORKER_A_NODE, "train.epochs=2", "tune.search=grid",
              "tune.search_space={'train.lr': 'choice([3e-3, 1e-3])'}", "tune.num_trials=1",
              "tune.scheduler=none", f"tune.storage=s3://{s3.bucket}/sweep-state",
              f"tune.output_dir={tmp_path / 'tune'}")  # fmt: skip
    assert run.start("tune").wait(timeout=600) == 0, run.log.read_text()[-4000:]
    assert len(new_worker_nodes(cluster, before)) == 2
    (sweep,) = (tmp_path / "tune").glob("sweep-*")
    assert len((sweep / "results.csv").read_text().splitlines()) == 3  # header + 2 trials
    assert any("checkpoint_" in key for key in s3.keys("sweep-state/"))
    assert (sweep / "model").is_dir()  # final: reuse read the best checkpoint from S3


def test_checkpoints_on_one_nodes_disk_are_refused_before_any_worker_starts(
    tmp_path, tiny_model_dir, s3, cluster
):
    before = worker_nodes(cluster)
    run = Run(tmp_path, tiny_model_dir, s3, cluster, "local", "train.storage=null")
    assert run.start().wait(timeout=300) == 2
    log = " ".join(run.log.read_text().split())  # the paragraph as one line
    assert "train.storage is not set" in log and "the Ray cluster has 3 nodes" in log
    assert "s3://BUCKET/PREFIX" in log and "Traceback" not in log
    assert not new_worker_nodes(cluster, before)
