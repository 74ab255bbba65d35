"""`ftpipe submit`: the compiled pipeline on a Kubeflow Pipelines cluster, once or on a schedule.

Everything goes through the KFP v2 REST API (`/apis/v2beta1/...`) at the `--host` endpoint: the
compiled package (KFP IR YAML) is sent inline with each run or recurring run, so nothing is
uploaded to the cluster's pipeline list and a schedule keeps running the spec it was created
with. Authentication comes from the environment only, never from a flag (see `connect`).
Every failure a user can fix (a bad `--host` or `--cron`, an unreachable endpoint, a refused
token, a rejected run) is raised as an `FtpipeError`; those from the endpoint name the host.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import kfp
import kfp_server_api
import urllib3
from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

from ftpipe.errors import FtpipeError, reason

# Seconds the health check waits for the endpoint: an address that drops packets fails fast.
HEALTHZ_TIMEOUT_S = 10
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
_CRON_FIELD = re.compile(r"[\w*?/,-]+")
_PORT_FORWARD = "kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80"


@dataclass(frozen=True)
class RemoteRun:
    """A run created on the cluster."""

    run_id: str
    url: str


@dataclass(frozen=True)
class RemoteSchedule:
    """A recurring run created on the cluster."""

    recurring_run_id: str
    cron: str
    url: str


class _Client(kfp.Client):
    """`kfp.Client` whose health check asks once, with a timeout.

    kfp's own check (which its constructor runs unless a namespace is set) asks five times, five
    seconds apart, logging a traceback each time, before giving up with a `TimeoutError`.
    """

    def get_kfp_healthz(self, sleep_duration: int = 5) -> kfp_server_api.V2beta1GetHealthzResponse:
        """Asks the endpoint's healthz once.

        Args:
            sleep_duration: Unused: there is no retry. Kept for kfp's signature.

        Returns:
            The deployment's health answer (whether it is multi-user).
        """
        return self._healthz_api.healthz_service_get_healthz(_request_timeout=HEALTHZ_TIMEOUT_S)


def connect(host: str) -> kfp.Client:
    """A KFP client for `host`, authenticated from the environment.

    Environment:
        KFP_TOKEN: a bearer token (sent as `Authorization: Bearer <token>`), e.g. from
            `kubectl create token <service-account> -n <namespace>` or your identity provider.
        KF_PIPELINES_SA_TOKEN_PATH: kfp's own variable, a file holding such a token (a projected
            service-account token in a pod). kfp reads it only in-cluster without a host, so it
            is passed on here; the file is read again for every request. KFP_TOKEN wins.
        KFP_COOKIES: a Cookie header value, e.g. `authservice_session=...` copied from a browser
            logged in to the Kubeflow dashboard (for deployments behind a login page).
        KFP_NAMESPACE: the profile namespace on a multi-user deployment. Unset, it is kfp's
            default "kubeflow", which kfp treats as no namespace: single-user, or the namespace
            in kfp's context file `~/.config/kfp/context.json` (which kfp also reads for a cookie
            or header).

    Args:
        host: The KFP endpoint, with its scheme: the UI's address, e.g.
            `https://kubeflow.example.com/pipeline`, or `http://localhost:8080` for a
            port-forward.

    Returns:
        The client; when no namespace is set, it has already checked the endpoint's health.

    Raises:
        FtpipeError: The host is not an http(s) URL, the token file is missing, or the endpoint
            cannot be reached or refuses the request.
    """
    return _client(_endpoint(host))


def submit(
    host: str, package: Path, arguments: dict[str, str], experiment: str, run_name: str
) -> RemoteRun:
    """Starts one run of a compiled pipeline package on the cluster.

    Args:
        host: The KFP endpoint (see `connect`).
        package: The compiled pipeline, a KFP IR YAML file.
        arguments: The pipeline's parameters, by name.
        experiment: The experiment to file the run under; created when missing.
        run_name: The run's display name.

    Returns:
        The run's id and its page in the KFP UI.

    Raises:
        FtpipeError: As `connect`, or the package is not a YAML file, or KFP rejects the run.
    """
    pipeline_file = _package_file(package)
    endpoint = _endpoint(host)
    client = _client(endpoint)
    with _talking_to(endpoint):
        result = client.create_run_from_pipeline_package(
            pipeline_file,
            arguments=arguments,
            run_name=run_name,
            experiment_id=_experiment_id(client, experiment, endpoint),
        )
    return RemoteRun(run_id=result.run_id, url=f"{endpoint}/#/runs/details/{result.run_id}")


def schedule(
    host: str,
    package: Path,
    arguments: dict[str, str],
    cron: str,
    experiment: str,
    job_name: str,
    max_concurrency: int = 1,
    catchup: bool = False,
) -> RemoteSchedule:
    """Creates a recurring run of a compiled pipeline package on the cluster.

    The package's spec is stored with the recurring run: recompiling the pipeline later does
    not change what the schedule runs.

    Args:
        host: The KFP endpoint (see `connect`).
        package: The compiled pipeline, a KFP IR YAML file.
        arguments: The pipeline's parameters, by name.
        cron: A standard 5-field cron expression, e.g. "0 3 * * *" (see `kfp_cron`).
        experiment: The experiment to file the runs under; created when missing.
        job_name: The recurring run's display name.
        max_concurrency: How many of its runs may run at once.
        catchup: Whether, after a pause, KFP starts every run it missed rather than only the
            latest.

    Returns:
        The recurring run's id, its 6-field KFP cron expression and its page in the KFP UI.

    Raises:
        FtpipeError: As `connect` and `kfp_cron`, or the package is not a YAML file, or KFP
            rejects the recurring run.
    """
    kfp_expression = kfp_cron(cron)
    pipeline_file = _package_file(package)
    endpoint = _endpoint(host)
    client = _client(endpoint)
    with _talking_to(endpoint):
        recurring = client.create_recurring_run(
            experiment_id=_experiment_id(client, experiment, endpoint),
            job_name=job_name,
            cron_expression=kfp_expression,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params=arguments,
            pipeline_package_path=pipeline_file,
        )
    run_id = recurring.recurring_run_id
    return RemoteSchedule(
        recurring_run_id=run_id,
        cron=kfp_expression,
        url=f"{endpoint}/#/recurringrun/details/{run_id}",
    )


def kfp_cron(cron: str) -> str:
    """The KFP form of a standard 5-field cron expression.

    KFP's scheduler (robfig/cron) takes 6 fields, seconds first; the usual 5 fields (minute,
    hour, day of month, month, day of week) get "0 " in front, so "0 3 * * *" (03:00 every day,
    in the scheduler's time zone, UTC on a stock install) becomes "0 0 3 * * *".

    Args:
        cron: The 5-field expression.

    Returns:
        The 6-field expression.

    Raises:
        FtpipeError: The expression does not have exactly 5 fields of cron characters.
    """
    fields = cron.split()
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(field) for field in fields):
        raise FtpipeError(
            f"--cron {cron!r} is not a 5-field cron expression. Give minute, hour, day of month, "
            'month and day of week, e.g. --cron "0 3 * * *" for 03:00 every day (UTC on a stock '
            "KFP install); ftpipe adds the seconds field KFP wants, so leave it out, and "
            "descriptors such as @daily are not accepted."
        )
    return f"0 {' '.join(fields)}"


def _endpoint(host: str) -> str:
    """`host` without a trailing slash, once it is an http(s) URL."""
    parts = urlsplit(host.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FtpipeError(
            f"--host {host!r} is not an http(s) URL. Give the Kubeflow Pipelines endpoint with "
            "its scheme: the address of the KFP UI, e.g. --host "
            "https://kubeflow.example.com/pipeline, or --host http://localhost:8080 after "
            f"`{_PORT_FORWARD}`."
        )
    return host.strip().rstrip("/")


def _client(endpoint: str) -> kfp.Client:
    """The client for an already checked endpoint, authenticated as `connect` describes."""
    token = os.environ.get("KFP_TOKEN") or None
    credentials = None
    token_path = os.environ.get(SA_TOKEN_ENV)
    if not token and token_path:
        if not Path(token_path).is_file():
            raise FtpipeError(
                f"{SA_TOKEN_ENV} names {token_path}, which is not a file. Point it at the token "
                f"file for {endpoint}, set KFP_TOKEN to the token instead, or unset it."
            )
        credentials = ServiceAccountTokenVolumeCredentials(token_path)
    with _talking_to(endpoint), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This client only works", FutureWarning)
        return _Client(
            host=endpoint,
            namespace=os.environ.get("KFP_NAMESPACE") or "kubeflow",
            existing_token=token,
            cookies=os.environ.get("KFP_COOKIES") or None,
            credentials=credentials,
        )


def _experiment_id(client: kfp.Client, name: str, endpoint: str) -> str:
    """The id of the experiment called `name`, created when missing."""
    experiment_id = client.create_experiment(name).experiment_id
    if not experiment_id:
        # A login page in front of the API answers 200 with HTML, which kfp reads as empty.
        raise FtpipeError(
            f"{endpoint} did not answer like the Kubeflow Pipelines API (no experiment id came "
            "back). Check --host (the KFP UI's address), and if a login page sits in front of "
            "it set KFP_TOKEN or KFP_COOKIES."
        )
    return experiment_id


@contextlib.contextmanager
def _talking_to(endpoint: str) -> Iterator[None]:
    """Raises the client's failures as FtpipeErrors naming `endpoint`; hides kfp's prints.

    kfp prints "Experiment details: <link>" and "Run details: <link>"; callers print the URL.
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except kfp_server_api.ApiException as exc:
        if not exc.status:  # TLS failures come back with status 0
            raise _unreachable(endpoint, reason(exc.reason or exc)) from None
        raise FtpipeError(_refusal(endpoint, exc)) from None
    except urllib3.exceptions.MaxRetryError as exc:  # refused, unknown name, timed out
        raise _unreachable(endpoint, reason(exc.reason or exc)) from None
    except urllib3.exceptions.HTTPError as exc:
        raise _unreachable(endpoint, reason(exc)) from None
    except ValueError as exc:  # kfp's own checks, e.g. two experiments with the name
        raise FtpipeError(f"Kubeflow Pipelines at {endpoint}: {reason(exc)}.") from None


def _unreachable(endpoint: str, why: str) -> FtpipeError:
    return FtpipeError(
        f"Cannot reach the Kubeflow Pipelines API at {endpoint} ({why}). Check --host and that "
        "the endpoint is up and reachable from here; for a cluster without an ingress run "
        f"`{_PORT_FORWARD}` and pass --host http://localhost:8080."
    )


def _refusal(endpoint: str, exc: kfp_server_api.ApiException) -> str:
    """A one-paragraph message for an error answer from the API."""
    said = f"{exc.status} {exc.reason}"
    message = _server_message(exc.body)
    if message:
        said += f": {message}"
    if exc.status in (401, 403):
        return (
            f"The Kubeflow Pipelines API at {endpoint} refused the request ({said}). Set "
            "KFP_TOKEN to a bearer token for it (or KFP_COOKIES to the session cookie of a "
            "browser logged in to the dashboard), and on a multi-user deployment KFP_NAMESPACE "
            "to a profile namespace the token may use."
        )
    return (
        f"The Kubeflow Pipelines API at {endpoint} answered {said}. Check --host (the KFP UI's "
        "address) and the pipeline's arguments."
    )


def _server_message(body: bytes | str | None) -> str:
    """The `message` of a KFP error body (JSON), else the body itself, on one short line."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body or ""
    with contextlib.suppress(ValueError):
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            text = str(parsed.get("message") or parsed.get("error") or text)
    return " ".join(text.split())[:300]


def _package_file(package: Path) -> str:
    """`package` as the path string kfp takes, once it is an existing YAML file."""
    if package.suffix not in (".yaml", ".yml") or not package.is_file():
        raise FtpipeError(
            f"The pipeline package {package} is not an existing .yaml file. Compile the pipeline "
            "with kfp's compiler (KFP IR YAML) and pass that file."
        )
    return str(package)
