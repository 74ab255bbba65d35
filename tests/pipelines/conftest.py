"""A tiny pipeline config: separable rows, a tiny model, a one-point sweep, all under tmp."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ftpipe.config import Config, load_config
from tests.helpers import ftpipe, separable_rows, write_csv


def pipeline_config(root: Path, model_dir: Path) -> Path:
    """A config file for the whole DAG, fast on 2 cores: every path under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    train = write_csv(root / "train.csv", separable_rows(40))
    raw = {
        "seed": 7,
        "data": {"train": str(train), "max_length": 16, "eval_fraction": 0.25,
                 "test_fraction": 0.2, "duplicates": "keep", "output_dir": str(root / "prep")},
        "model": {"name": str(model_dir)},
        "strategy": {"name": "auto"},
        # A random-init model's embeddings place no text near the reference prose; these tests
        # are about the pipeline, so every text counts as near (recommend picks by the probe).
        "recommend": {"probe_rows": 40, "probe_folds": 2, "max_embedding_distance": 2.0,
                      "output_dir": str(root / "rec")},
        "train": {"batch_size": 8, "num_workers": 1, "epochs": 3, "lr": 3e-3, "head_lr": 3e-2,
                  "output_dir": str(root / "train"), "cache_dir": str(root / "cache"),
                  "log_every_steps": 10},
        "tune": {"search": "grid", "num_trials": 1, "max_concurrent_trials": 1,
                 "search_space": {"train.lr": "choice([3.0e-3])"},
                 "output_dir": str(root / "tune")},
        "registry": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "model_name": "tiny"},
        "evaluate": {"output_dir": str(root / "eval"), "latency_rows": 0},
        "pipeline": {"local_root": str(root / "pipeline")},
    }  # fmt: skip
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def tiny_pipeline_config(tmp_path: Path, tiny_model_dir: Path) -> Path:
    return pipeline_config(tmp_path, tiny_model_dir)


@pytest.fixture(scope="module")
def own_ray():
    """A module that starts Ray in this process shuts it down after: a second Ray on the
    machine (the one `ftpipe run` starts) would make Ray's state-API lookups ambiguous."""
    yield
    import ray

    ray.shutdown()


@dataclass(frozen=True)
class PipelineRun:
    """One `ftpipe run` of the tiny pipeline: its config file, config and console output."""

    config_path: Path
    config: Config
    result: subprocess.CompletedProcess

    @property
    def run_dir(self) -> Path:
        """The run's directory under pipeline.local_root (the KFP local runner's run name).

        The first one: a test may run the pipeline again (its directory names sort by time).
        """
        return sorted(Path(self.config.pipeline.local_root).glob("ftpipe-finetune-*"))[0]


@pytest.fixture(scope="session")
def tiny_pipeline_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    """The tiny pipeline run once through the KFP local runner, shared by the tests that read
    what a run leaves behind (its stores, its report), so the suite pays for one run."""
    path = pipeline_config(tmp_path_factory.mktemp("pipeline-run"), tiny_model_dir)
    result = ftpipe("run", "-c", str(path), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return PipelineRun(path, load_config(path), result)
