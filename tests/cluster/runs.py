"""One `ftpipe` command on the test cluster, and what the cluster tests look at around it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.cluster.services import BIN, RayCluster, S3Server, wait_for
from tests.helpers import FTPIPE, train_config

STEPS = 42
"""60 training rows / 8 per step = 7 steps x 6 epochs."""
SETTINGS = ("train.batch_size=8", "train.eval_every_steps=5", "train.max_failures=3",
            "train.placement=SPREAD")  # fmt: skip
ONE_WORKER_A_NODE = "train.cpus_per_worker=1.5"
"""Of a node's 2 CPUs, a worker takes 1.5: a second worker needs the other node, while Ray
Train's own small actors still fit beside it."""


class Run:
    """One `ftpipe train` (or tune) of a tiny config on the cluster, its storage under `name`."""

    def __init__(self, tmp: Path, model: Path, s3: S3Server, cluster: RayCluster, name: str,
                 *overrides: str, env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.tmp, self.s3, self.cluster, self.name = tmp, s3, cluster, name
        self.env = env or {}  # the driver's, on top of the cluster's (Ray Train passes it on)
        config = train_config(tmp, model, *SETTINGS, f"train.ray_address={cluster.address}",
                              f"train.storage=s3://{s3.bucket}/{name}",
                              f"registry.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
                              *overrides)  # fmt: skip
        self.config = tmp / "config.json"
        self.config.write_text(json.dumps(config.model_dump(mode="json")))
        self.log = tmp / "ftpipe.log"

    def start(self, command: str = "train", *args: str) -> subprocess.Popen:
        env = {**os.environ, **self.cluster.driver_env, "HF_HUB_OFFLINE": "1", "COLUMNS": "200",
               **self.env}  # fmt: skip
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
