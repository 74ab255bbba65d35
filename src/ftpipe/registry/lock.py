"""The promotion lock: one promotion of a registered model at a time, across processes.

MLflow's alias update is last-writer-wins and offers no compare-and-set, so two promotions
that both read champion v1 could each decide against v1 and overwrite each other: the later
one wins without ever being compared with the earlier. Promotions of one model therefore run
one at a time, under a lock that MLflow's stores make atomic: creating the registered model
`<name>.promotion-lock` succeeds for exactly one caller (the name is a primary key); the others
get RESOURCE_ALREADY_EXISTS and wait. The holder deletes the lock when it is done.

The lock records its holder (host, pid, the pid's namespace and start time). A waiter says at
once who holds it and since when, then:

* breaks it at once when the holder ran on this host and its process is gone (a killed
  `promote`): `os.kill(pid, 0)` finds no such process, or the pid now belongs to a process
  that started later;
* otherwise waits, logging the seconds left every `COUNTDOWN_EVERY_S`, and breaks it once it
  is older than `promote.lock_timeout_s` (a holder on another host cannot be checked).

Breaking renames the lock to a unique name, which only one breaker can do, then checks that
the renamed lock still holds the stale token before deleting it (a fresh lock renamed by
mistake is renamed back).
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException

from ftpipe.errors import FtpipeError, reason
from ftpipe.registry.client import retry

log = logging.getLogger(__name__)

COUNTDOWN_EVERY_S = 5.0
"""Seconds between two log lines of a waiter's countdown."""

_LOCK_SUFFIX = ".promotion-lock"
_TOKEN = "ftpipe.lock.token"
_ACQUIRED = "ftpipe.lock.acquired_at"
_HOLDER = "ftpipe.lock."
"""Prefix of the holder's `process_identity` tags (host, pid, pidns, pid_start)."""


def process_identity() -> dict[str, str]:
    """This process, as string tags another process can check with `process_gone`.

    Returns:
        host, pid, pidns (the pid namespace: pids of other containers are not comparable) and
        pid_start (the process start time in clock ticks since boot: a reused pid differs).
    """
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": str(pid),
        "pidns": _pid_namespace(),
        "pid_start": _start_ticks(pid) or "",
    }


def process_gone(identity: Mapping[str, str]) -> bool:
    """Whether the process `identity` (from `process_identity`) is known to have exited.

    Only a process of this host and pid namespace can be checked; any other counts as alive.

    Args:
        identity: host, pid and optionally pidns and pid_start.

    Returns:
        True when no such process runs here, or its pid now belongs to a later process.
    """
    try:
        pid = int(identity.get("pid", ""))
    except ValueError:
        return False
    if identity.get("host") != socket.gethostname() or pid <= 0:
        return False
    if identity.get("pidns") and identity["pidns"] != _pid_namespace():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's process: it exists
    started = identity.get("pid_start")
    now = _start_ticks(pid)
    return bool(started and now and started != now)


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (after the command name, which may hold spaces)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


@contextmanager
def promotion_lock(client: MlflowClient, name: str, timeout_s: float) -> Iterator[None]:
    """Hold `<name>.promotion-lock` for the duration; see the module docstring.

    Args:
        client: A client of the registry.
        name: The registered model being promoted.
        timeout_s: Age after which another holder's lock counts as stale and is broken.

    Yields:
        Nothing; the block runs holding the lock, released on exit (error or not).

    Raises:
        FtpipeError: If another promotion holds the lock for longer than twice `timeout_s`.
    """
    lock = name + _LOCK_SUFFIX
    token = uuid.uuid4().hex
    me = process_identity()
    owner = f"{me['host']}:{me['pid']}"
    waiter = _Waiter(client, lock, timeout_s)
    delay = 0.05
    while True:
        tags = {_TOKEN: token, _ACQUIRED: f"{time.time():.3f}", "ftpipe.lock.owner": owner}
        tags |= {_HOLDER + key: value for key, value in me.items()}
        try:
            retry(
                lambda t=tags: client.create_registered_model(
                    lock, tags=t, description=f"ftpipe promotion lock for {name}; held by {owner}"
                ),
                "take the promotion lock",
            )
            break
        except MlflowException as exc:
            # DOES_NOT_EXIST: MLflow saw the name taken, then found it gone (released in
            # between); either way another process got there first.
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        waiter.check()
        if waiter.waited() > 2 * timeout_s:
            raise FtpipeError(
                f"Another promotion of {name} has held the lock ({lock}) for over "
                f"{2 * timeout_s:.0f}s. Wait for it, or, if its process died, delete the "
                f"registered model {lock}; promote.lock_timeout_s sets the wait."
            )
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 1.5, 1.0)
    try:
        yield
    finally:
        _release(client, lock, token)


class _Waiter:
    """Watches another process's lock: names its holder, breaks it when dead or stale."""

    def __init__(self, client: MlflowClient, lock: str, timeout_s: float):
        self.client, self.lock, self.timeout_s = client, lock, timeout_s
        self.started = time.monotonic()
        self.announced: str | None = None  # the token of the holder last named
        self.last_line = 0.0

    def waited(self) -> float:
        """Seconds spent waiting so far."""
        return time.monotonic() - self.started

    def check(self) -> None:
        """Read the lock; name a new holder; break the lock if its holder is gone or stale."""
        try:
            held = retry(lambda: self.client.get_registered_model(self.lock), "read the lock")
        except MlflowException:
            return  # released meanwhile
        stale = held.tags.get(_TOKEN)
        acquired = float(held.tags.get(_ACQUIRED, "inf"))
        age = time.time() - acquired
        holder = _holder(held)
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        if stale != self.announced:
            self.announced, self.last_line = stale, time.monotonic()
            since = "an unknown time"
            if math.isfinite(acquired):
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(acquired))
                since = f"{stamp} ({age:.0f}s ago)"
            log.warning(
                "The promotion lock %s is held by %s since %s; it counts as stale after "
                "promote.lock_timeout_s=%.0fs", self.lock, who, since, self.timeout_s,
            )  # fmt: skip
        if process_gone(holder):
            log.warning("The holder of %s, %s, is gone: breaking the lock now", self.lock, who)
            _break(self.client, self.lock, stale)
        elif age >= self.timeout_s:
            log.warning("Breaking the promotion lock %s: %s has held it for %.0fs", self.lock,
                        who, age)  # fmt: skip
            _break(self.client, self.lock, stale)
        elif time.monotonic() - self.last_line >= COUNTDOWN_EVERY_S:
            self.last_line = time.monotonic()
            log.info("Waiting for the promotion lock %s (held by %s): %.0fs left before it "
                     "counts as stale", self.lock, who, self.timeout_s - age)  # fmt: skip


def _holder(held: RegisteredModel) -> dict[str, str]:
    """The holder's identity from the lock's tags (older locks name only `host:pid`)."""
    holder = {k.removeprefix(_HOLDER): v for k, v in held.tags.items() if k.startswith(_HOLDER)}
    if "pid" not in holder and ":" in holder.get("owner", ""):
        holder["host"], holder["pid"] = holder["owner"].rsplit(":", 1)
    return holder


def _release(client: MlflowClient, lock: str, token: str) -> None:
    """Delete the lock if it still holds `token`; a failure is logged, never raised."""
    try:
        held = retry(lambda: client.get_registered_model(lock), "read the lock")
        if held.tags.get(_TOKEN) == token:  # never delete a lock that was broken and retaken
            retry(lambda: client.delete_registered_model(lock), "release the lock")
    except MlflowException as exc:
        log.warning("Could not release the promotion lock %s: %s", lock, reason(exc))


def _break(client: MlflowClient, lock: str, stale: str | None) -> None:
    """Break the lock if it still holds the token `stale`; see the module docstring."""
    grave = f"{lock}.stale-{uuid.uuid4().hex[:12]}"
    try:
        retry(lambda: client.rename_registered_model(lock, grave), "break the stale lock")
    except MlflowException:
        return  # someone else broke or released it first
    renamed = retry(lambda: client.get_registered_model(grave), "read the broken lock")
    if renamed.tags.get(_TOKEN) == stale:
        retry(lambda: client.delete_registered_model(grave), "delete the broken lock")
        return
    try:  # a fresh lock was renamed by mistake: give it back
        client.rename_registered_model(grave, lock)
    except MlflowException as exc:
        log.warning("Could not restore the promotion lock %s: %s", lock, reason(exc))
