"""A local run is closed: every process of it listens on loopback only, Ray wants its token.

A driver process starts Ray the way `ftpipe train`, `tune` and `run` do (`ensure_ray(None)`)
and runs tasks, so workers are up. While it holds Ray, the test reads the kernel's socket
tables (/proc/net/tcp, /proc/net/tcp6), keeps the listening sockets that belong to that
driver's process tree (socket inodes in /proc/<pid>/fd), and checks their addresses; then
it knocks on the GCS and the dashboard without the token. The same scan watches a whole
2-worker Ray Train run (whose process group has its own rendezvous and peer sockets), and a
lone process that joins its own process group.
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

from tests.helpers import train_config

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
"""
REPORT_AND_HOLD = """
with open(sys.argv[1] + ".part", "w") as out:
    json.dump(info, out)
os.rename(sys.argv[1] + ".part", sys.argv[1])
sys.stdin.read()  # hold on until the test closes stdin
"""
LONE_PROCESS = """
import json, os, sys
import torch
from ftpipe.train.distributed import RankContext, init_distributed

init_distributed(RankContext())  # no MASTER_ADDR: the process group of a lone process
torch.distributed.all_reduce(torch.ones(1))
info = {}
"""
TRAIN = """
import json, sys
from pathlib import Path
from ftpipe.config.load import validate_config
from ftpipe.train.ray_train import train_ray

train_ray(validate_config(json.loads(Path(sys.argv[1]).read_text())))
"""

STARTUP_S = 60
RUN_S = 240
TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"
Listener = tuple[str, int, int, str]
"""A listening socket: address, port, and the pid and command line of its process."""


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


def test_a_local_training_run_listens_on_loopback_only(tmp_path, tiny_model_dir):
    # 2 workers, so the process group has a rendezvous (rank 0 hosts the store) and peers.
    config = train_config(tmp_path, tiny_model_dir, "train.num_workers=2", "train.epochs=1")
    (tmp_path / "config.json").write_text(config.model_dump_json())
    driver = start(tmp_path, TRAIN, str(tmp_path / "config.json"))

    seen, met = watch(driver, RUN_S)

    assert driver.returncode == 0
    assert (Path(config.train.output_dir) / "model").is_dir()
    # Not vacuous: the scan saw the process group's own sockets, which a worker connected to.
    assert met, sorted(seen)
    exposed = sorted(entry for entry in seen if not is_loopback(entry[0]))
    assert not exposed, exposed


def test_a_lone_process_group_listens_on_loopback_only(tmp_path):
    with local_run(tmp_path, LONE_PROCESS) as (process, _):
        listening = listeners(process_tree(process.pid))
        assert listening  # not vacuous: the backend's peer socket (gloo listens even alone)
        exposed = [entry for entry in listening if not is_loopback(entry[0])]
        assert not exposed, exposed


@contextmanager
def local_run(tmp_path: Path, script: str = DRIVER) -> Iterator[tuple[subprocess.Popen, dict]]:
    """A driver that ran `script` (by default: started a local Ray as a run does) and holds on;
    yields it and what it reported, and stops it (and so its Ray) after."""
    ready = tmp_path / "ready.json"
    driver = start(tmp_path, script + REPORT_AND_HOLD, str(ready))
    try:
        deadline = time.monotonic() + STARTUP_S
        while not ready.exists():
            if driver.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the driver did not get ready in {STARTUP_S} s")
            time.sleep(0.2)
        yield driver, json.loads(ready.read_text())
    finally:
        driver.stdin.close()  # the driver exits; Ray's exit handler stops its processes
        try:
            driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()


def start(tmp_path: Path, script: str, *args: str) -> subprocess.Popen:
    """`python -c script args` with no Ray or process-group settings inherited, HOME in tmp."""
    (tmp_path / "home").mkdir()
    inherited = ("RAY_AUTH", "RAY_ADDRESS", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    # Caches stay where they were: DeepSpeed would build its communication op again (~30 s).
    cache = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    env |= {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": cache,
            "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, env=env)


def watch(driver: subprocess.Popen, timeout_s: float) -> tuple[set[Listener], set[int]]:
    """Sample the sockets of the driver's process tree until it exits.

    Returns:
        Every listening socket seen, and the ports of those a Ray Train worker listened on
        while another one was connected to it (the process group's store and peers).
    """
    seen: set[Listener] = set()
    met: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while driver.poll() is None:
        if time.monotonic() > deadline:
            driver.kill()
            pytest.fail(f"the run did not end in {timeout_s} s")
        tree = process_tree(driver.pid)
        listening = {(*entry, command(entry[2])) for entry in listeners(tree)}
        seen |= listening
        workers = {pid for pid in tree if "RayTrainWorker" in command(pid)}
        by_port = {port: pid for _, port, pid, _ in listening if pid in workers}
        met |= {port for pid, port in connections(workers) if by_port.get(port, pid) != pid}
        time.sleep(0.5)
    return seen, met


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
    return [(*local, pid) for pid, state, local, _ in _sockets_of(pids) if state == TCP_LISTEN]


def connections(pids: set[int]) -> set[tuple[int, int]]:
    """(pid, remote port) of every established TCP connection that one of `pids` holds."""
    return {(pid, remote[1]) for pid, state, _, remote in _sockets_of(pids)
            if state == TCP_ESTABLISHED}  # fmt: skip


def _sockets_of(pids: set[int]) -> Iterator[tuple[int, str, tuple[str, int], tuple[str, int]]]:
    """(pid, state, local address, remote address) of the TCP sockets that `pids` hold."""
    sockets = dict(_sockets())
    for pid in pids:
        for inode in _socket_inodes(pid):
            if inode in sockets:
                yield pid, *sockets[inode]


def _sockets() -> Iterator[tuple[int, tuple[str, tuple[str, int], tuple[str, int]]]]:
    """(inode, (state, local address, remote address)) of each TCP socket, IPv4 and IPv6."""
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (_address(field, family) for field in fields[1:3])
            yield int(fields[9]), (fields[3], local, remote)


def _address(field: str, family: int) -> tuple[str, int]:
    address, port = field.split(":")
    raw = bytes.fromhex(address)
    # The kernel prints each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw), int(port, 16)


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
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:120].strip()
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
