"""Render infra/ once per session, the way `make deploy` applies it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.infra.rendering import FAKE_SHA, INFRA, OVERLAYS, REGISTRY, Obj, render, run_render_sh


@pytest.fixture(scope="session")
def infra_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of infra/, so render.sh writes its .build/ outside the work tree."""
    target = tmp_path_factory.mktemp("infra") / "infra"
    shutil.copytree(INFRA, target, ignore=shutil.ignore_patterns(".build"))
    return target


@pytest.fixture(scope="session")
def raw_overlays() -> dict[str, list[Obj]]:
    """Each overlay as committed: component images still carry the GIT_SHA placeholder."""
    return {name: render(INFRA / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def deployable(infra_copy: Path) -> dict[str, list[Obj]]:
    """Each overlay as `make deploy` applies it: render.sh with a registry and a commit sha."""
    rendered = {}
    for name in OVERLAYS:
        result = run_render_sh(infra_copy, name, REGISTRY, FAKE_SHA)
        assert result.returncode == 0, result.stderr
        rendered[name] = render(Path(result.stdout.strip()))
    return rendered


@pytest.fixture(scope="session")
def secret_templates() -> list[Obj]:
    """infra/secrets: the Secret templates, never applied by `make deploy`."""
    return render(INFRA / "secrets")


@pytest.fixture(scope="session")
def job_templates() -> list[Obj]:
    """infra/jobs: the one-off RayJob template."""
    return render(INFRA / "jobs")


@pytest.fixture(scope="session")
def everything(
    deployable: dict[str, list[Obj]], secret_templates: list[Obj], job_templates: list[Obj]
) -> dict[str, list[Obj]]:
    """Per overlay, all that runs on a cluster: the overlay, its Secrets and one-off jobs."""
    return {name: [*objs, *secret_templates, *job_templates] for name, objs in deployable.items()}
