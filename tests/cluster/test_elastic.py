"""An elastic `ftpipe train` on the real 3-node cluster keeps its global batch as a node dies.

This module gets a cluster of its own (the `cluster` fixture is per module). An elastic run
starts with as many workers as the cluster's resources hold for it, and Ray Train answers that
from a coordinator actor that lives as long as the cluster: every Train run reserves its
workers' resources there for up to 180 s unless it ends cleanly. On the shared cluster, the
runs other tests kill would still hold theirs, and this run would start with one worker,
leaving nothing to shrink.
"""

from __future__ import annotations

import pytest

from tests.cluster.runs import ONE_WORKER_A_NODE, STEPS, Run, losing_node_b

pytestmark = pytest.mark.integration


def test_an_elastic_run_shrinks_to_one_worker_at_the_same_global_batch(
    tmp_path, tiny_model_dir, s3, cluster
):
    # After node b's loss, the new group waits this long for a second worker before it goes on
    # with one (Ray's default, 60 s, would only make the test slower).
    wait = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "30"}
    run = Run(tmp_path, tiny_model_dir, s3, cluster, "elastic", "train.num_workers=[1, 2]",
              ONE_WORKER_A_NODE, env=wait)  # fmt: skip
    result = losing_node_b(run, cluster)
    history = result["history"]
    assert (history[0]["workers"], history[0]["accumulation"]) == (2, 1)
    # After the node's loss, one worker does the two workers' rows in two micro-batches.
    assert (history[-1]["workers"], history[-1]["accumulation"]) == (1, 2)
    assert result["final_metrics"]["step"] == STEPS
    assert result["final_metrics"]["accuracy"] > 0.9
