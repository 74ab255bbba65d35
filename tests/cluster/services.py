"""Real services on 127.0.0.1 for the cluster tests: an S3 server and a multi-node Ray cluster.

The Ray cluster is the shape infra/ deploys: a head that takes no work (`--num-cpus 0`) and
worker nodes, each a separate `ray start` process with its own raylet, object store and
resources. A node is killed as a machine dies: SIGKILL to its raylet and every process under
it, at once.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
HOST = "127.0.0.2"
"""Every node's address: loopback, but not 127.0.0.1, which `ray start` swaps for the host's
outward address (it takes a node on 127.0.0.1 for a one-machine Ray that nobody joins)."""
HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 4,
                 "health_check_timeout_ms": 500}  # fmt: skip
"""The head declares a node dead after ~2 s of silence (Ray's default is about 30 s)."""


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, what: str, timeout: float = 60.0) -> None:
    """Poll `check()` until it is true, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.2)


@dataclass
class S3Server:
    """moto's standalone S3 server on 127.0.0.1, with one bucket."""

    process: subprocess.Popen
    endpoint: str
    bucket: str = "ftpipe"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: boto3, pyarrow and MLflow read these."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        }  # fmt: skip

    @classmethod
    def start(cls, log: Path) -> S3Server:
        port = free_port()
        process = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
        server = cls(process, f"http://127.0.0.1:{port}")
        wait_for(server._up, "the S3 server")
        request = urllib.request.Request(f"{server.endpoint}/{server.bucket}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        return server

    def _up(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=1).close()
        except OSError:
            return False
        return True

    def keys(self, prefix: str) -> list[str]:
        """Every object key under `prefix` in the bucket."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")  # fmt: skip
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@dataclass
class RayCluster:
    """A head without work and named worker nodes, all `ray start --block` processes."""

    temp_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start_head(self) -> None:
        self._start("head", ["--head", f"--port={self.port}", "--num-cpus=0",
                             "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={free_port()}", f"--temp-dir={self.temp_dir}",
                             f"--system-config={json.dumps(HEALTH_CHECKS)}"])  # fmt: skip

    def add_worker(self, name: str, cpus: int = 2) -> None:
        """Start a worker node called `name` and wait until the head counts it."""
        alive = len(self.alive_nodes())
        self._start(name, [f"--address={self.address}", f"--num-cpus={cpus}"])
        wait_for(lambda: len(self.alive_nodes()) > alive, f"worker node {name}")

    def kill(self, name: str) -> None:
        """SIGKILL node `name`'s raylet and every process under it, as if its machine died."""
        import psutil

        process = self.nodes.pop(name)
        tree = psutil.Process(process.pid).children(recursive=True)
        for child in tree:
            child.send_signal(signal.SIGKILL)
        process.kill()
        process.wait()

    def alive_nodes(self) -> list[dict]:
        """The nodes the head counts alive (from `ray list nodes`)."""
        result = subprocess.run(
            [str(BIN / "ray"), "list", "nodes", f"--address={self.address}", "--format=json",
             "--filter", "state=ALIVE"], capture_output=True, text=True, env=self._env(),
        )  # fmt: skip
        try:
            return json.loads(result.stdout) if result.returncode == 0 else []
        except ValueError:  # a head still starting answers with a message, not JSON
            return []

    def stop(self) -> None:
        for name in list(self.nodes)[::-1]:
            self.kill(name)

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.temp_dir / f"{name}.log").open("w")
        self.nodes[name] = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", f"--node-ip-address={HOST}",
             "--object-store-memory=80000000", "--disable-usage-stats",
             # Its own agent port: Ray's fixed default (52365) may be taken by another Ray.
             f"--dashboard-agent-listen-port={free_port()}", *args],
            stdout=log, stderr=subprocess.STDOUT, env=self._env(),
        )  # fmt: skip
        if name == "head":
            wait_for(lambda: bool(self.alive_nodes()), "the Ray head")

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.driver_env, "RAY_USAGE_STATS_ENABLED": "0"}

    @property
    def driver_env(self) -> dict[str, str]:
        """What a process joining the cluster needs: `env` and the cluster's auth token."""
        # RAY_ADDRESS: Ray Train's helpers look the cluster up by it, and this machine may run
        # other Ray instances (other tests' local ones) at the same time.
        return {**self.env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                "RAY_ADDRESS": self.address}  # fmt: skip
