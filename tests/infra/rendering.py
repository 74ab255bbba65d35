"""Rendering infra/ with `kubectl kustomize` and infra/render.sh, as `make deploy` does."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
KUBERAY_SCHEMAS = REPO.parent / "shared" / "k8s-schemas" / "kuberay"
OVERLAYS = sorted(p.parent.name for p in (INFRA / "overlays").glob("*/kustomization.yaml"))
REGISTRY = "registry.example.com/ml"
FAKE_SHA = "0123456789ab"  # what `make deploy` passes: git rev-parse --short=12 HEAD

Obj = dict[str, Any]


def kubectl() -> str:
    """The kubectl binary, or a skip when there is none with kustomize v5 built in."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl not found: rendering infra/ needs kubectl (built-in kustomize v5)")
    version = subprocess.run(
        [path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30
    )
    kustomize = json.loads(version.stdout or "{}").get("kustomizeVersion", "")
    if not kustomize.startswith("v5"):
        pytest.skip(f"kubectl's built-in kustomize is {kustomize or 'unknown'}, infra/ needs v5")
    return path


def render(directory: Path) -> list[Obj]:
    """`kubectl kustomize directory`, as a list of objects."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def run_render_sh(infra: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """infra/render.sh with args, in the given copy of infra/."""
    return subprocess.run(
        ["sh", str(infra / "render.sh"), *args], capture_output=True, text=True, timeout=30
    )
