"""Start or join the Ray cluster a run uses; a Ray started here is closed to the network.

Anyone who can reach an open Ray port can join the cluster and run code in it. So the local
Ray that `ftpipe train`, `tune` and `run` start binds every process (GCS, raylet, object
manager, workers, dashboard and its agent, metrics, runtime-env agent) to 127.0.0.1, and
turns on Ray's token authentication with a token that lives in this process's environment
(and its children's) only. Joining an existing cluster changes nothing: that cluster's own
settings apply, and Ray reads its token from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from ftpipe.environ import restored_environ

LOOPBACK = "127.0.0.1"
CLUSTER_FLAG = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch between one-machine and multi-node address handling (read at import)."""
HANDED_ON = ("HF_HUB_OFFLINE", "FTPIPE_PIPELINE_RUN_ID", "KFP_RUN_ID")
"""The driver's environment variables its Ray workers get too."""


def ensure_ray(address: str | None) -> None:
    """Join the cluster at `address`, or start a quiet, closed local Ray (once per process).

    Args:
        address: The cluster to join (`train.ray_address`). None joins the cluster RAY_ADDRESS
            or a `ray start` on this machine names, as `ray.init` does, and otherwise starts
            a local Ray on 127.0.0.1 with token authentication.
    """
    import ray

    if ray.is_initialized():
        return
    local = _starts_local_ray(address)
    with _closed_local_ray() if local else nullcontext():
        ray.init(
            address=address,
            # The dashboard serves the state API, which Ray Train needs to free the resources
            # of a run that was stopped (a trial ASHA cut). It listens on 127.0.0.1 only.
            include_dashboard=True,
            dashboard_host=LOOPBACK,
            logging_level=logging.WARNING,
            # Ray's own loggers at ERROR in every process: its per-report and set-up lines
            # drown the training log. Failures still surface, and as the exception fit() raises.
            logging_config=ray.LoggingConfig(log_level="ERROR"),
            log_to_driver=True,
            # Workers see the driver's Hub access and pipeline run (a trial's lineage names
            # it); no code is shipped.
            runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k in HANDED_ON}},
            **({"_node_ip_address": LOOPBACK} if local else {}),
        )


def _starts_local_ray(address: str | None) -> bool:
    """Whether `ray.init(address)` will start a new local Ray rather than join one.

    Ray's own resolution decides: None still joins the cluster RAY_ADDRESS names, or the one
    a `ray start` on this machine recorded (a Ray job's driver gets RAY_ADDRESS this way).
    """
    from ray._private.services import canonicalize_bootstrap_address

    return address == "local" or (address is None and canonicalize_bootstrap_address(None) is None)


@contextmanager
def _closed_local_ray() -> Iterator[None]:
    """Set up token authentication and loopback-only addresses for the Ray about to start.

    The token: RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH when the user set one (so `ray` commands
    and the dashboard can use it too), otherwise a fresh random one in RAY_AUTH_TOKEN. Ray's
    own default would write one to ~/.ray/auth_token, readable beyond this run and kept after it.
    """
    from ray._private import ray_constants
    from ray._private.authentication.authentication_token_setup import _enable_token_auth
    from ray._raylet import AuthenticationTokenLoader

    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_urlsafe(32)
    # RAY_AUTH_MODE=token in the environment every Ray process inherits, and in this
    # process's RayConfig, which read the mode when ray was imported.
    _enable_token_auth()
    # This process may have cached another token (an earlier Ray in the same process).
    AuthenticationTokenLoader.instance().reset_cache()
    # On Linux Ray turns a loopback node address into the host's outward address; it keeps
    # 127.0.0.1 (and binds its servers to it) only for a single-machine Ray, which is what
    # it takes this flag to mean (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, read at import).
    # Each Ray process gets the node address on its command line, so the flag is only
    # needed while ray.init starts them.
    # The Ray processes started now inherit the flag too: some of them (the Jobs API's agent)
    # look the node address up again, and must find 127.0.0.1 as well.
    cluster = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with restored_environ(CLUSTER_FLAG):
            os.environ[CLUSTER_FLAG] = "0"
            yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster
