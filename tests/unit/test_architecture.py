"""The import contracts of pyproject.toml hold, and `lint-imports` really enforces them.

Both tests lint the ftpipe this interpreter imports (src/ftpipe, or whatever PYTHONPATH puts
first): the second on a copy of it with one rule broken on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter.api import read_configuration

import ftpipe
from tests.helpers import REPO

PYPROJECT = REPO / "pyproject.toml"
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
CONTRACTS = {c["id"]: c["name"] for c in read_configuration(str(PYPROJECT))["contracts_options"]}


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> tuple[int, str]:
    """Run `lint-imports` with the project's contracts; its status and its output on one line."""
    env = {**os.environ, "COLUMNS": "200"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo", str(PYPROJECT)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def test_every_contract_is_kept():
    status, output = lint_imports(REPO)
    assert status == 0, output
    assert set(CONTRACTS) == {"layers", "ray", "mlflow", "kfp"}
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in output, output


@pytest.mark.parametrize(
    ("contract", "module", "source"),
    [
        ("layers", "data/_violation.py", "import ftpipe.cli\n"),
        ("ray", "train/_violation.py", "import ray\n"),
        ("mlflow", "data/_violation.py", "import mlflow\n"),
        ("kfp", "config/_violation.py", "import kfp\n"),
    ],
)
def test_a_module_breaking_a_contract_fails_the_lint(tmp_path, contract, module, source):
    copy = tmp_path / "src" / "ftpipe"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(ftpipe.__file__).parent, copy, ignore=skip)
    (copy / module).write_text(f'"""Breaks the {contract} contract."""\n\n{source}')

    status, output = lint_imports(tmp_path, pythonpath=tmp_path / "src")

    assert status != 0, output
    assert f"{CONTRACTS[contract]} BROKEN" in output, output
    violator = "ftpipe." + module.removesuffix(".py").replace("/", ".")
    assert f"{violator} -> " in output, output
