"""`ftpipe train` and `ftpipe tune` on a real 3-node Ray cluster, checkpoints in a real S3.

The cluster (tests/cluster/services.py) is infra/'s shape on loopback: a head without work and
worker nodes `a` and `b` of 2 CPUs each. Every run is the `ftpipe` command a user types, with
`train.storage` on the S3 server, so no worker reads another's disk. An uninterrupted run is
the yardstick: a run that loses a node, or its driver, must end at the same step with the
same metrics.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.cluster.runs import (
    ONE_WORKER_A_NODE,
    STEPS,
    Run,
    after_checkpoints,
    losing_node_b,
    new_worker_nodes,
    worker_nodes,
)

pytestmark = pytest.mark.integration

TOLERANCE = 1e-6
"""Same seed, data order, restored optimizer and RNG: the same model up to float noise."""


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
