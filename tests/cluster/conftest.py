"""The cluster tests' services: one S3 server per session, one 3-node Ray cluster per module."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.services import RayCluster, S3Server


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server (moto) on 127.0.0.1 with the bucket `ftpipe`."""
    server = S3Server.start(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(s3: S3Server) -> Iterator[RayCluster]:
    """A head that takes no work and worker nodes `a` and `b`, 2 CPUs each, as in infra/."""
    # Ray's socket paths must stay short: a temp dir directly under /tmp, not pytest's.
    ray = RayCluster(Path(tempfile.mkdtemp(prefix="ftpipe-ray-", dir="/tmp")), s3.env)
    try:
        ray.start_head()
        ray.add_worker("a")
        ray.add_worker("b")
        yield ray
    finally:
        ray.stop()
