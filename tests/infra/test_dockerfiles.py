"""Lint infra/docker: pinned bases, non-root, constraints.txt, torch first, commit labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra import dockerfile_rules as rules
from tests.infra.rendering import INFRA, REPO

DOCKER = INFRA / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
COMPONENT = [DOCKER / "cpu.Dockerfile", DOCKER / "cuda.Dockerfile"]


def instructions(path: Path) -> list[rules.Instruction]:
    return rules.parse(path.read_text())


def pinned(name: str, text: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)$", text, re.MULTILINE | re.IGNORECASE)
    assert match, f"{name} is not pinned"
    return match.group(1)


def test_the_three_images_exist():
    assert [p.name for p in DOCKERFILES] == [
        "cpu.Dockerfile",
        "cuda.Dockerfile",
        "mlflow.Dockerfile",
    ]


@pytest.mark.parametrize("rule", rules.ALL_RULES, ids=lambda r: r.__name__)
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_rule_holds(dockerfile, rule):
    assert rule(instructions(dockerfile)) == []


@pytest.mark.parametrize("dockerfile", COMPONENT, ids=lambda p: p.name)
def test_component_image_installs_torch_first_at_the_makefile_version(dockerfile):
    parsed = instructions(dockerfile)
    assert rules.torch_not_installed_first(parsed) == []
    makefile = (REPO / "Makefile").read_text()
    torch = re.search(r"^TORCH \?= torch==(\S+)$", makefile, re.MULTILINE)
    assert torch, "Makefile no longer sets TORCH ?= torch==X"
    assert rules.arg_default(parsed, "TORCH_VERSION") == torch.group(1)


@pytest.mark.parametrize("dockerfile", COMPONENT, ids=lambda p: p.name)
def test_component_image_names_its_commit_in_the_environment_and_last(dockerfile):
    """The build argument `make images` passes becomes FTPIPE_GIT_SHA, for lineage tags."""
    assert rules.commit_not_in_environment(instructions(dockerfile)) == []
    makefile = (REPO / "Makefile").read_text()
    assert "--build-arg GIT_SHA=$$(git rev-parse HEAD)" in makefile


@pytest.mark.parametrize(
    ("dockerfile", "variant"), [(COMPONENT[0], "cpu"), (COMPONENT[1], "cu128")], ids=["cpu", "cuda"]
)
def test_component_image_matches_constraints_ray_and_python_311(dockerfile, variant):
    parsed = instructions(dockerfile)
    ray = pinned("ray", (REPO / "constraints.txt").read_text())
    assert rules.base_images(parsed) == [f"rayproject/ray:{ray}-py311-{variant}"]
    # The torch build matches the base: CPU wheels on the CPU image, the same CUDA on CUDA.
    index = rules.arg_default(parsed, "TORCH_INDEX_URL")
    assert index == f"{rules.TORCH_INDEX}{variant}"


def test_mlflow_image_runs_python_311_with_pinned_server_packages():
    parsed = instructions(DOCKER / "mlflow.Dockerfile")
    (base,) = rules.base_images(parsed)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base)
    constraints = (REPO / "constraints.txt").read_text()
    pinned("mlflow", constraints)  # the server is the MLflow ftpipe's clients speak to
    requirements = (DOCKER / "mlflow-requirements.txt").read_text().splitlines()
    for line in [r for r in requirements if r and not r.startswith("#")]:
        name = re.split(r"[\[=<>]", line)[0]
        assert "==" in line or re.search(rf"^{re.escape(name)}==", constraints, re.MULTILINE), (
            f"{line}: pin it in mlflow-requirements.txt or constraints.txt"
        )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerignore_admits_only_what_the_image_copies(dockerfile):
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    lines = [ln for ln in ignore.read_text().splitlines() if ln and not ln.startswith("#")]
    # Deny by default: .venv, outputs/ and any credentials file stay out of the build context.
    assert lines[0] == "*"
    admitted = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for ins in instructions(dockerfile):
        if ins.keyword == "COPY":
            sources = [a for a in ins.args.split() if not a.startswith("--")][:-1]
            assert {s.rstrip("/") for s in sources} <= admitted, f"COPY {ins.args}"


BAD = [
    ("latest", rules.unpinned_base_images, "FROM python:latest\n"),
    ("no-tag", rules.unpinned_base_images, "FROM python\n"),
    ("minor-only", rules.unpinned_base_images, "ARG BASE=python:3.11-slim\nFROM ${BASE}\n"),
    ("arg-without-default", rules.unpinned_base_images, "ARG BASE\nFROM $BASE\n"),
    ("no-user", rules.runs_as_root, "FROM python:3.11.14-slim\nRUN true\n"),
    ("root-last", rules.runs_as_root, "FROM python:3.11.14-slim\nUSER 1000\nUSER root\n"),
    ("uid-0", rules.runs_as_root, "FROM python:3.11.14-slim\nUSER 0:0\n"),
    ("named-user", rules.runs_as_root, "FROM python:3.11.14-slim\nUSER app\n"),
    ("no-constraints", rules.unconstrained_pip_installs, "RUN pip install .\n"),
    ("unpinned-torch", rules.unconstrained_pip_installs, "RUN pip install torch\n"),
    (
        "constraints-elsewhere",
        rules.unconstrained_pip_installs,
        "RUN pip install -c other.txt . && echo constraints.txt\n",
    ),
    (
        "torch-after-project",
        rules.torch_not_installed_first,
        "RUN pip install -c constraints.txt .\nRUN pip install torch==2.13.0\n",
    ),
    (
        "torch-with-others",
        rules.torch_not_installed_first,
        "RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 numpy\n",
    ),
    (
        "torch-from-pypi",
        rules.torch_not_installed_first,
        "RUN pip install torch==2.13.0\n",
    ),
    ("no-revision", rules.missing_revision_label, "ARG GIT_SHA\nLABEL a=b\n"),
    ("no-commit-env", rules.commit_not_in_environment, "ARG GIT_SHA\nENV GIT_SHA=${GIT_SHA}\n"),
    (
        "commit-before-run",
        rules.commit_not_in_environment,
        "ARG GIT_SHA\nRUN pip install -c constraints.txt .\nENV FTPIPE_GIT_SHA=${GIT_SHA}\n",
    ),
    ("add-url", rules.remote_fetches, "ADD https://example.com/x.sh /x.sh\n"),
    ("curl-sh", rules.remote_fetches, "RUN curl -fsSL https://example.com/i.sh | sh\n"),
]


@pytest.mark.parametrize(("rule", "text"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_rule_flags_broken_dockerfile(rule, text):
    assert rule(rules.parse(text)), f"{rule.__name__} accepted:\n{text}"


def test_every_rule_has_a_broken_case():
    assert {rule for _, rule, _ in BAD} == {
        *rules.ALL_RULES,
        rules.torch_not_installed_first,
        rules.commit_not_in_environment,
    }


def test_parser_joins_continuations_and_drops_comments():
    parsed = rules.parse(
        "# syntax=docker/dockerfile:1\nRUN a \\\n    # note\n    && b\nUSER 1000\n"
    )
    assert [(i.keyword, i.args, i.line) for i in parsed] == [
        ("RUN", "a && b", 2),
        ("USER", "1000", 5),
    ]
