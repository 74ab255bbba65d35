"""The local Ray a run starts is closed: every Ray process on loopback, token auth on.

A driver process starts Ray the way `ftpipe train`, `tune` and `run` do (`ensure_ray(None)`)
and runs tasks, so workers are up. While it holds Ray, the test reads the kernel's socket
tables (/proc/net/tcp, /proc/net/tcp6), keeps the listening sockets that belong to that
driver's process tree (socket inodes in /proc/<pid>/fd), and checks their addresses; then
it knocks on the GCS and the dashboard without the token.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DRIVER = """
import json, os, sys
import ray
from ftpipe.train.ray_cluster import ensure_ray

ensure_ray(None)

@ray.remote
def pid():
    return os.getpid()

workers = ray.get([pid.remote() for _ in range(4)])
context = ray.get_runtime_context()
info = {"workers": workers, "gcs": context.gcs_address,
        "dashboard": ray._private.worker.get_dashboard_url()}
with open(sys.argv[1] + ".part", "w") as out:
    json.dump(info, out)
os.rename(sys.argv[1] + ".part", sys.argv[1])
sys.stdin.read()  # hold Ray until the test closes stdin
"""

STARTUP_S = 60


def test_a_local_ray_listens_on_loopback_only_and_wants_its_token(tmp_path):
    with local_run(tmp_path) as (driver, info):
        gcs_host, gcs_port = info["gcs"].rsplit(":", 1)
        assert gcs_host == "127.0.0.1"
        tree = process_tree(driver.pid)
        assert set(info["workers"]) <= tree  # the scan below covers the workers
        listening = listeners(tree)
        addresses = {port: ip for ip, port, _ in listening}
        # Not vacuous: the scan finds the GCS, the dashboard and listeners of the workers.
        assert is_loopback(addresses[int(gcs_port)]), addresses
        assert int(info["dashboard"].rsplit(":", 1)[1]) in addresses
        assert {pid for _, _, pid in listening} & set(info["workers"])
        token = environment(gcs_pid(tree))["RAY_AUTH_TOKEN"]

        assert knock_on_gcs(info["gcs"], token=None) == "UNAUTHENTICATED"
        assert knock_on_gcs(info["gcs"], token="not-" + token) == "UNAUTHENTICATED"
        assert knock_on_gcs(info["gcs"], token=token) == "OK"
        assert dashboard_status(info["dashboard"], token=None) == 401
        assert dashboard_status(info["dashboard"], token=token) == 200

        # Again after the knocks, for anything that started listening late.
        late = listeners(process_tree(driver.pid))
        exposed = [entry for entry in listening + late if not is_loopback(entry[0])]
        assert not exposed, [(ip, port, command(pid)) for ip, port, pid in exposed]
        assert environment(gcs_pid(tree))["RAY_AUTH_MODE"] == "token"
    # The session's token lived in the environment only; Ray's default would write one here.
    assert not (tmp_path / "home/.ray/auth_token").exists()


@contextmanager
def local_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, dict]]:
    """A driver that started a local Ray as a run does, with no Ray settings inherited;
    yields it and what it reported, and stops it (and so its Ray) after."""
    ready = tmp_path / "ready.json"
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env |= {"HOME": str(tmp_path / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(ready)],
                              stdin=subprocess.PIPE, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_S
        while not ready.exists():
            if driver.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the driver did not start Ray in {STARTUP_S} s")
            time.sleep(0.2)
        yield driver, json.loads(ready.read_text())
    finally:
        driver.stdin.close()  # the driver exits; Ray's exit handler stops its processes
        try:
            driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()


def process_tree(root: int) -> set[int]:
    """`root` and every process below it (Ray's processes are all children of the driver)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


def listeners(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket that one of `pids` holds."""
    sockets = dict(_listening_sockets())
    found = []
    for pid in pids:
        for inode in _socket_inodes(pid):
            if inode in sockets:
                found.append((*sockets[inode], pid))
    return found


def _listening_sockets() -> Iterator[tuple[int, tuple[str, int]]]:
    """(inode, (address, port)) of each socket in state LISTEN, IPv4 and IPv6."""
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            yield int(fields[9]), (socket.inet_ntop(family, raw), int(port, 16))


def _socket_inodes(pid: int) -> Iterator[int]:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # exited meanwhile
        return
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            yield int(target[len("socket:[") : -1])


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4 loopback address mapped into IPv6."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:120]
    except OSError:
        return "?"


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def gcs_pid(pids: set[int]) -> int:
    return next(pid for pid in pids if "gcs_server" in command(pid).split(" ", 1)[0])


def knock_on_gcs(address: str, token: str | None) -> str:
    """The gRPC status the GCS answers a node-list request with (the call that joins start)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata,
                                timeout=10)  # fmt: skip
        except grpc.RpcError as error:
            return error.code().name
    return "OK"


def dashboard_status(address: str, token: str | None) -> int:
    """The HTTP status of the Jobs API's job list (what `ray job submit` talks to)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://{address}/api/jobs/", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
