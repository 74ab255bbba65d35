"""The whole DAG for instruction tuning: the shipped SFT demo through the KFP local runner."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ftpipe.config import load_config
from tests.helpers import REPO, ftpipe

# Over two minutes on 2 cores: make test-all runs it (tests/unit/stages and tests/unit/data
# cover instruction tuning's stages one by one in make test).
pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEMO = REPO / "examples" / "sft_demo"


def build_demo_model(directory: Path) -> Path:
    """The demo's tiny Llama and word-level chat tokenizer (examples/sft_demo/build_model.py)."""
    spec = importlib.util.spec_from_file_location("sft_build_model", DEMO / "build_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(directory, [DEMO / "train.jsonl", DEMO / "test.jsonl"])


def test_the_sft_demo_runs_every_stage_and_registers_a_chat_model_that_answers(tmp_path):
    raw = yaml.safe_load((REPO / "configs" / "sft-demo.yaml").read_text())
    raw["data"] |= {"train": str(DEMO / "train.jsonl"), "test": str(DEMO / "test.jsonl"),
                    "output_dir": str(tmp_path / "prep")}  # fmt: skip
    raw["model"] = {"name": str(build_demo_model(tmp_path / "model"))}
    raw["strategy"] = {"name": "auto"}
    raw["train"] |= {"epochs": 1, "output_dir": str(tmp_path / "train")}
    raw["recommend"] = {"perplexity_rows": 16, "output_dir": str(tmp_path / "rec")}
    raw["tune"] = {"search": "grid", "num_trials": 1, "max_concurrent_trials": 1,
                   "search_space": {"train.lr": "choice([3.0e-3])"},
                   "output_dir": str(tmp_path / "tune")}  # fmt: skip
    raw["registry"] = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "model_name": "sft"}
    raw["evaluate"] |= {"generate_rows": 8, "latency_rows": 0,
                        "output_dir": str(tmp_path / "eval")}  # fmt: skip
    raw["pipeline"] = {"local_root": str(tmp_path / "pipeline")}
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)

    result = ftpipe("run", "-c", str(path), timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    root = next(Path(config.pipeline.local_root).glob("ftpipe-finetune-*"))
    for task in ("prep", "recommend", "tune", "train", "evaluate", "register", "promote"):
        assert (root / task).is_dir(), sorted(p.name for p in root.iterdir())
    client = MlflowClient(config.registry.tracking_uri)
    version = client.get_model_version("sft", "1")
    assert version.tags["ftpipe.gate.metric"] == "loss", version.tags
    assert str(client.get_model_version_by_alias("sft", "champion").version) == "1"

    answered = ftpipe("predict", "--model", "models:/sft@champion", "--tracking-uri",
                      config.registry.tracking_uri, "--prompt", "my printer is jammed")  # fmt: skip
    assert answered.returncode == 0, answered.stderr[-3000:]
    assert answered.stdout.strip(), "the registered model generated nothing"
