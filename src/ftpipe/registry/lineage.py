"""Lineage: what a run and a registered model version came from, as string tags.

Pure Python (no MLflow), so the same tags go on the run, on the model version, and into tests.
From a version's tags alone one can find the config (by hash), the data (by fingerprint), the
base model and its exact weights, the code (git commit) and the library versions.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from importlib import metadata
from pathlib import Path

from ftpipe.artifacts import localize
from ftpipe.config.schema import Config, ModelConfig, config_hash
from ftpipe.hub import resolve_model

PREFIX = "ftpipe."
PACKAGES = ("ftpipe", "torch", "transformers", "peft", "deepspeed", "ray")
"""Libraries whose versions change what training produces."""

PIPELINE_RUN_VAR = "FTPIPE_PIPELINE_RUN_ID"
"""The pipeline run id as `ftpipe.stage` sets it while a stage of a pipeline run runs."""

KFP_RUN_VAR = "KFP_RUN_ID"
"""The run id on a KFP cluster's pods: the pipeline sets it from their `pipeline/runid` label."""

PIPELINE_RUN_ENV = (PIPELINE_RUN_VAR, KFP_RUN_VAR)
"""Environment variables read, in order, for the pipeline run id."""

GIT_SHA_ENV = "FTPIPE_GIT_SHA"
"""The commit an image was built from (infra/docker sets it from the GIT_SHA build argument)."""

TUNE_TRIAL_ENV = ("FTPIPE_TUNE_TRIAL_ID",)
"""Environment variables read for the Tune trial id."""

NONE = "none"
"""The value of an id that does not apply (a run outside a pipeline or a sweep)."""

_WEIGHT_SUFFIXES = (".safetensors", ".json", ".txt", ".model")
"""Files that define a local base model: weights, configs, vocabularies."""


def lineage_tags(
    config: Config,
    data_fingerprint: str | None = None,
    pipeline_run_id: str | None = None,
    tune_trial_id: str | None = None,
) -> dict[str, str]:
    """Every lineage tag, keys prefixed `ftpipe.`.

    Args:
        config: The run's resolved config.
        data_fingerprint: The prep fingerprint; read from `data.output_dir` when None.
        pipeline_run_id: The pipeline run; from FTPIPE_PIPELINE_RUN_ID or KFP_RUN_ID when None.
        tune_trial_id: The Tune trial; from FTPIPE_TUNE_TRIAL_ID when None.
    """
    commit, dirty = git_state()
    tags = {
        "config_hash": config_hash(config),
        "data_fingerprint": data_fingerprint or read_fingerprint(config.data.output_dir),
        "base_model": config.model.name,
        "base_model_revision": base_model_revision(config.model),
        "strategy": config.strategy.name,
        "git_commit": commit,
        "git_dirty": dirty,
        "pipeline_run_id": pipeline_run_id or pipeline_run(),
        "tune_trial_id": tune_trial_id or _from_env(TUNE_TRIAL_ENV),
    }
    tags |= {f"version.{name}": version for name, version in package_versions().items()}
    return {PREFIX + key: value for key, value in tags.items()}


def pipeline_run() -> str:
    """The pipeline run this process works for, from the environment, or "none"."""
    return _from_env(PIPELINE_RUN_ENV)


def read_fingerprint(prep_dir: str | Path) -> str:
    """The data fingerprint prep wrote, or "unknown" when the prep output is not here."""
    # Imported here: it pulls in torch, and processes that never train read this module.
    from ftpipe.data.prepared import PrepDir

    try:
        return PrepDir(localize(prep_dir)).fingerprint
    except (OSError, ValueError, KeyError):
        return "unknown"


def git_state(cwd: str | Path | None = None) -> tuple[str, str]:
    """(commit, "true"/"false" for uncommitted changes) of the code that runs.

    The git checkout at `cwd` (default: the working directory) when there is one. Else, as in
    an image, which has no .git, the commit is FTPIPE_GIT_SHA and its cleanliness "unknown";
    with neither, both are "unknown". A checkout wins over the variable: it is the code this
    process runs and it can tell whether it is dirty, while the variable was fixed when the
    image was built and says nothing of code installed on top of it.
    """
    try:
        commit = _git(cwd, "rev-parse", "HEAD")
        dirty = bool(_git(cwd, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return os.environ.get(GIT_SHA_ENV, "").strip() or "unknown", "unknown"
    return commit, str(dirty).lower()


def package_versions() -> dict[str, str]:
    """Installed version of each of PACKAGES, or "not installed"."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def base_model_revision(model: ModelConfig) -> str:
    """The base model's exact identity.

    The pinned `model.revision` if set; for a local directory (or a built-in alias) a sha256
    over its weight, config and vocabulary files; for a Hub id the commit of the cached
    snapshot; else "unknown".
    """
    if model.revision:
        return model.revision
    location = Path(resolve_model(model.name)).expanduser()
    if location.is_dir():
        return "sha256:" + _directory_digest(str(location.resolve()), _mtime(location))
    return _cached_hub_commit(model.name) or "unknown"


@functools.lru_cache(maxsize=8)
def _directory_digest(directory: str, _mtime: float) -> str:
    # Cached per process: a sweep logs the same base model for every trial.
    digest = hashlib.sha256()
    root = Path(directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix not in _WEIGHT_SUFFIXES or ".cache" in path.parts:
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(functools.partial(handle.read, 1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _mtime(directory: Path) -> float:
    return max((p.stat().st_mtime for p in directory.iterdir()), default=0.0)


def _cached_hub_commit(repo_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a valid repo id, or no hub client: nothing to report
        return None
    if isinstance(path, str) and "/snapshots/" in path:
        return path.split("/snapshots/")[1].split("/")[0]
    return None


def _git(cwd: str | Path | None, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def _from_env(names: tuple[str, ...]) -> str:
    return next((os.environ[n] for n in names if os.environ.get(n)), NONE)
