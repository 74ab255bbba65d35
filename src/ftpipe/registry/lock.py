"""The promotion lock: one promotion of a registered model at a time, across processes.

MLflow's alias update is last-writer-wins and offers no compare-and-set, so two promotions
that both read champion v1 could each decide against v1 and overwrite each other: the later
one wins without ever being compared with the earlier. Promotions of one model therefore run
one at a time, under a lock that MLflow's stores make atomic: creating the registered model
`<name>.promotion-lock` succeeds for exactly one caller (the name is a primary key); the others
get RESOURCE_ALREADY_EXISTS and wait. The holder deletes the lock when it is done.

A lock left by a dead process (older than `promote.lock_timeout_s`) is broken by renaming
it to a unique name, which only one breaker can do, then checking that the renamed lock still
holds the stale token before deleting it (a fresh lock renamed by mistake is renamed back).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ftpipe.errors import FtpipeError, reason
from ftpipe.registry.client import retry

log = logging.getLogger(__name__)

_LOCK_SUFFIX = ".promotion-lock"
_TOKEN = "ftpipe.lock.token"
_ACQUIRED = "ftpipe.lock.acquired_at"


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
    owner = f"{socket.gethostname()}:{os.getpid()}"
    started = time.monotonic()
    delay = 0.05
    while True:
        tags = {_TOKEN: token, _ACQUIRED: f"{time.time():.3f}", "ftpipe.lock.owner": owner}
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
        _break_if_stale(client, lock, timeout_s)
        if time.monotonic() - started > 2 * timeout_s:
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


def _release(client: MlflowClient, lock: str, token: str) -> None:
    """Delete the lock if it still holds `token`; a failure is logged, never raised."""
    try:
        held = retry(lambda: client.get_registered_model(lock), "read the lock")
        if held.tags.get(_TOKEN) == token:  # never delete a lock that was broken and retaken
            retry(lambda: client.delete_registered_model(lock), "release the lock")
    except MlflowException as exc:
        log.warning("Could not release the promotion lock %s: %s", lock, reason(exc))


def _break_if_stale(client: MlflowClient, lock: str, timeout_s: float) -> None:
    """Break the lock if it is older than `timeout_s`; see the module docstring."""
    try:
        held = retry(lambda: client.get_registered_model(lock), "read the lock")
    except MlflowException:
        return  # released meanwhile
    acquired = float(held.tags.get(_ACQUIRED, "inf"))
    if time.time() - acquired < timeout_s:
        return
    stale = held.tags.get(_TOKEN)
    grave = f"{lock}.stale-{uuid.uuid4().hex[:12]}"
    try:
        retry(lambda: client.rename_registered_model(lock, grave), "break the stale lock")
    except MlflowException:
        return  # someone else broke or released it first
    renamed = retry(lambda: client.get_registered_model(grave), "read the broken lock")
    if renamed.tags.get(_TOKEN) == stale:
        log.warning("Broke a stale promotion lock %s held since %s", lock, acquired)
        retry(lambda: client.delete_registered_model(grave), "delete the broken lock")
        return
    try:  # a fresh lock was renamed by mistake: give it back
        client.rename_registered_model(grave, lock)
    except MlflowException as exc:
        log.warning("Could not restore the promotion lock %s: %s", lock, reason(exc))
