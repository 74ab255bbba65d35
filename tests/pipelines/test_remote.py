"""`pipelines.remote` and `ftpipe submit|schedule` against a fake KFP v2beta1 API server: the
exact requests they send.

No `from __future__ import annotations`: kfp reads the component's annotations as types.
"""

import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp
import pytest
import yaml
from kfp import compiler, dsl

from ftpipe.errors import FtpipeError
from pipelines import remote
from tests.helpers import ftpipe

API = "/apis/v2beta1"
AUTH_ENV = (
    "KFP_TOKEN", "KFP_COOKIES", "KFP_NAMESPACE", "KF_PIPELINES_SA_TOKEN_PATH",
    "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_IAP_OAUTH2_CLIENT_ID",
    "KF_PIPELINES_APP_OAUTH2_CLIENT_ID", "KF_PIPELINES_APP_OAUTH2_CLIENT_SECRET",
)  # fmt: skip


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: Any


@dataclass
class FakeKfp:
    """Just the v2beta1 endpoints the kfp client hits to submit and schedule, recording all."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    # path -> (status, message): answer that path with a KFP error body.
    fail: dict[str, tuple[int, str]] = field(default_factory=dict)
    login_page: bool = False

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def one(self, method: str, path: str) -> Request:
        (request,) = [r for r in self.requests if (r.method, r.path) == (method, API + path)]
        return request

    def answer(self, request: Request) -> tuple[int, dict[str, Any]]:
        route = (request.method, request.path.removeprefix(API))
        if route == ("GET", "/healthz"):
            return 200, {"multi_user": False, "pipeline_store": "database"}
        if route == ("GET", "/experiments"):
            (predicate,) = json.loads(request.query["filter"][0])["predicates"]
            found = [e for e in self.experiments if e["display_name"] == predicate["stringValue"]]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if route == ("POST", "/experiments"):
            experiment = {**request.body, "experiment_id": f"exp-{len(self.experiments) + 1}"}
            self.experiments.append(experiment)
            return 200, experiment
        if route == ("POST", "/runs"):
            return 200, {**request.body, "run_id": "run-1", "state": "PENDING"}
        if route == ("POST", "/recurringruns"):
            return 200, {**request.body, "recurring_run_id": "rr-1", "status": "ENABLED"}
        return 404, {"error": "Not Found", "code": 5, "message": f"no route {request.path}"}


def handler_for(fake: FakeKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Request(
                method=self.command,
                path=url.path,
                query=parse_qs(url.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=json.loads(raw) if raw else None,
            )
            fake.requests.append(request)
            if fake.login_page:
                self.reply(200, b"<html><body>Log in</body></html>", "text/html")
                return
            if url.path in fake.fail:
                status, message = fake.fail[url.path]
                answer: dict[str, Any] = {"error": message, "code": 16, "message": message}
            else:
                status, answer = fake.answer(request)
            self.reply(status, json.dumps(answer).encode(), "application/json")

        def reply(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = handle_one

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def fake() -> Iterator[FakeKfp]:
    state = FakeKfp()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def hermetic_kfp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No auth or endpoint from the machine's environment, and no kfp context file."""
    for name in AUTH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))


@dsl.component(base_image="python:3.11-slim")
def echo(message: str) -> str:
    return message


@dsl.pipeline(name="tiny")
def tiny(message: str = "hi", config_uri: str = "") -> None:
    echo(message=message)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("package") / "tiny.yaml"
    compiler.Compiler().compile(pipeline_func=tiny, package_path=str(path))
    return path


ARGUMENTS = {"message": "hello", "config_uri": "gs://bucket/ftpipe.yaml"}


def test_submit_creates_the_experiment_then_a_run_carrying_the_package_spec(
    fake, package, monkeypatch
):
    monkeypatch.setenv("KFP_TOKEN", "tok-123")

    run = remote.submit(fake.url + "/", package, ARGUMENTS, "ftpipe", "ftpipe-nightly")

    assert fake.calls() == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/runs"),
    ]
    lookup = fake.one("GET", "/experiments")
    assert json.loads(lookup.query["filter"][0]) == {
        # kfp sends the operation's enum number: 1 is EQUALS.
        "predicates": [{"operation": 1, "key": "display_name", "stringValue": "ftpipe"}]
    }
    assert fake.one("POST", "/experiments").body == {"display_name": "ftpipe", "namespace": ""}
    assert fake.one("POST", "/runs").body == {
        "experiment_id": "exp-1",
        "display_name": "ftpipe-nightly",
        "pipeline_spec": yaml.safe_load(package.read_text()),
        "runtime_config": {"parameters": ARGUMENTS},
    }
    assert all(r.headers["authorization"] == "Bearer tok-123" for r in fake.requests)
    assert run == remote.RemoteRun(run_id="run-1", url=f"{fake.url}/#/runs/details/run-1")


def test_submit_reuses_an_existing_experiment_in_the_namespace_and_sends_cookies(
    fake, package, monkeypatch
):
    monkeypatch.setenv("KFP_NAMESPACE", "team-a")
    monkeypatch.setenv("KFP_COOKIES", "authservice_session=abc")
    fake.experiments.append(
        {"experiment_id": "exp-old", "display_name": "ftpipe", "namespace": "team-a"}
    )

    run = remote.submit(fake.url, package, ARGUMENTS, "ftpipe", "ftpipe-nightly")

    # A namespace set: kfp skips its health check, and nothing creates an experiment.
    assert fake.calls() == [("GET", f"{API}/experiments"), ("POST", f"{API}/runs")]
    assert fake.one("GET", "/experiments").query["namespace"] == ["team-a"]
    assert fake.one("POST", "/runs").body["experiment_id"] == "exp-old"
    for request in fake.requests:
        assert request.headers["cookie"] == "authservice_session=abc"
        assert "authorization" not in request.headers
    assert run.run_id == "run-1"


def test_schedule_creates_a_recurring_run_with_a_six_field_cron(fake, package, monkeypatch):
    monkeypatch.setenv("KFP_TOKEN", "tok-123")

    scheduled = remote.schedule(
        fake.url, package, ARGUMENTS, "0 3 * * *", "ftpipe", "ftpipe-nightly", max_concurrency=2
    )

    assert fake.calls()[-1] == ("POST", f"{API}/recurringruns")
    assert fake.one("POST", "/recurringruns").body == {
        "experiment_id": "exp-1",
        "display_name": "ftpipe-nightly",
        "mode": "ENABLE",
        "trigger": {"cron_schedule": {"cron": "0 0 3 * * *"}},
        "max_concurrency": 2,
        "no_catchup": True,
        "pipeline_spec": yaml.safe_load(package.read_text()),
        "runtime_config": {"parameters": ARGUMENTS},
    }
    assert all(r.headers["authorization"] == "Bearer tok-123" for r in fake.requests)
    assert scheduled == remote.RemoteSchedule(
        recurring_run_id="rr-1",
        cron="0 0 3 * * *",
        url=f"{fake.url}/#/recurringrun/details/rr-1",
    )


def test_schedule_with_catchup_lets_kfp_backfill(fake, package):
    remote.schedule(fake.url, package, {}, "*/15 * * * MON-FRI", "ftpipe", "j", catchup=True)

    body = fake.one("POST", "/recurringruns").body
    assert body["no_catchup"] is False
    assert body["trigger"] == {"cron_schedule": {"cron": "0 */15 * * * MON-FRI"}}
    assert body["max_concurrency"] == 1


def test_a_service_account_token_file_is_read_for_every_request(
    fake, package, monkeypatch, tmp_path
):
    token_file = tmp_path / "token"
    token_file.write_text("sa-token\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))

    remote.submit(fake.url, package, ARGUMENTS, "ftpipe", "r")

    assert len(fake.requests) == 4
    assert all(r.headers["authorization"] == "Bearer sa-token" for r in fake.requests)


def test_kfp_token_wins_over_the_token_file(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "missing"))
    monkeypatch.setenv("KFP_TOKEN", "tok-123")

    remote.connect(fake.url)

    assert [r.headers["authorization"] for r in fake.requests] == ["Bearer tok-123"]


def test_a_missing_token_file_is_named(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "missing"))

    with pytest.raises(
        FtpipeError, match=r"KF_PIPELINES_SA_TOKEN_PATH names \S*missing, which is not"
    ):
        remote.connect(fake.url)
    assert fake.requests == []


@pytest.mark.parametrize(
    "host", ["kubeflow.example.com", "localhost:8080", "ftp://kubeflow.example.com", "http://"]
)
def test_a_host_without_an_http_scheme_is_refused_before_any_request(host, package):
    with pytest.raises(FtpipeError, match=r"--host .* is not an http\(s\) URL.*https://"):
        remote.submit(host, package, {}, "ftpipe", "r")


@pytest.mark.parametrize(
    "cron", ["0 3 * *", "0 0 3 * * *", "@daily", "", "0 3 * * 1;", "every day at 3"]
)
def test_a_cron_that_is_not_five_fields_is_refused_before_any_request(cron, fake, package):
    with pytest.raises(FtpipeError, match=r"--cron .* is not a 5-field cron expression"):
        remote.schedule(fake.url, package, {}, cron, "ftpipe", "j")
    assert fake.requests == []


def test_a_package_that_is_not_yaml_is_refused_before_any_request(fake, tmp_path):
    with pytest.raises(FtpipeError, match=r"pipeline\.yaml is not an existing \.yaml file"):
        remote.submit(fake.url, tmp_path / "pipeline.yaml", {}, "ftpipe", "r")
    assert fake.requests == []


def test_an_unreachable_host_is_named():
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{sock.getsockname()[1]}"

    with pytest.raises(
        FtpipeError, match=re.escape(f"Cannot reach the Kubeflow Pipelines API at {host} (")
    ):
        remote.connect(host)


def test_a_refused_token_is_named_after_one_health_check(fake, monkeypatch):
    monkeypatch.setenv("KFP_TOKEN", "expired")
    fake.fail[f"{API}/healthz"] = (401, "Unauthenticated")

    with pytest.raises(FtpipeError) as raised:
        remote.connect(fake.url)

    message = str(raised.value)
    assert f"API at {fake.url} refused the request (401 Unauthorized: Unauthenticated)" in message
    assert "KFP_TOKEN" in message
    assert fake.calls() == [("GET", f"{API}/healthz")]  # no retries (kfp's own makes five)


def test_a_rejected_run_carries_the_server_message(fake, package):
    fake.fail[f"{API}/runs"] = (400, "Invalid input error: parameter message is required")

    with pytest.raises(
        FtpipeError, match=re.escape(f"at {fake.url} answered 400 Bad Request: Invalid input")
    ):
        remote.submit(fake.url, package, {}, "ftpipe", "r")


def test_two_experiments_with_the_name_are_named(fake, package):
    for experiment_id in ("exp-a", "exp-b"):
        fake.experiments.append({"experiment_id": experiment_id, "display_name": "ftpipe"})

    with pytest.raises(FtpipeError, match=re.escape(f"Kubeflow Pipelines at {fake.url}: Multiple")):
        remote.submit(fake.url, package, {}, "ftpipe", "r")
    assert ("POST", f"{API}/runs") not in fake.calls()


def test_a_login_page_in_front_of_the_api_is_not_taken_for_it(fake, package):
    fake.login_page = True

    with pytest.raises(
        FtpipeError, match=re.escape(f"{fake.url} did not answer like the Kubeflow")
    ):
        remote.submit(fake.url, package, {}, "ftpipe", "r")
    assert ("POST", f"{API}/runs") not in fake.calls()


def test_ftpipe_submit_and_schedule_send_the_compiled_pipeline_and_its_arguments(
    fake, monkeypatch, tmp_path
):
    # The commands come from pipelines/cli.py through the `ftpipe.commands` entry point.
    monkeypatch.setenv("HOME", str(tmp_path))  # no kfp context file from this machine
    common = ["-c", "configs/demo.yaml", "--host", fake.url, "--mlflow-uri", "http://mlflow:5000",
              "data.max_length=32"]  # fmt: skip

    submitted = ftpipe("submit", *common)
    scheduled = ftpipe("schedule", *common, "--cron", "0 3 * * *", "--experiment", "nightly")

    assert submitted.returncode == 0, submitted.stderr
    assert f"Started run run-1: {fake.url}/#/runs/details/run-1" in submitted.stdout
    assert scheduled.returncode == 0, scheduled.stderr
    assert "Scheduled rr-1 at cron '0 0 3 * * *'" in scheduled.stdout
    run, recurring = fake.one("POST", "/runs").body, fake.one("POST", "/recurringruns").body
    assert recurring["experiment_id"] == "exp-2"  # "nightly", created after "ftpipe"
    name = recurring["display_name"]
    assert re.fullmatch(r"ftpipe-finetune-[0-9a-f]{8}", name)
    assert re.fullmatch(rf"{name}-\d{{8}}-\d{{6}}", run["display_name"])
    for body in (run, recurring):
        spec = body["pipeline_spec"]["pipeline_spec"]  # beside the Kubernetes platform_spec
        assert spec["pipelineInfo"]["name"] == "ftpipe-finetune"
        parameters = body["runtime_config"]["parameters"]
        assert parameters["mlflow_uri"] == "http://mlflow:5000"
        assert parameters["ray_address"] == ""
        assert yaml.safe_load(parameters["config"])["data"]["max_length"] == 32
