"""The whole DAG for named entities: a CoNLL-2003 subsample through the KFP local runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ftpipe.config import load_config
from tests.helpers import REPO, ftpipe

CONLL = REPO.parent / "shared" / "data" / "conll2003"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CONLL / "train.txt").exists(),
        reason=f"CoNLL-2003 not found at {CONLL}: this test needs ../shared/data/conll2003",
    ),
]


def head_sentences(source: Path, target: Path, sentences: int) -> str:
    """The first `sentences` sentences of a CoNLL file, in its own format."""
    blocks = source.read_text().split("\n\n")[:sentences]
    target.write_text("\n\n".join(blocks) + "\n")
    return str(target)


def test_a_conll_subsample_runs_every_stage_and_registers_an_entity_tagger(tmp_path):
    config_path = tmp_path / "pipeline.yaml"
    with (REPO / "configs" / "conll2003.yaml").open() as handle:
        raw = yaml.safe_load(handle)
    raw["data"] |= {
        "train": head_sentences(CONLL / "train.txt", tmp_path / "train.txt", 240),
        "eval": head_sentences(CONLL / "valid.txt", tmp_path / "valid.txt", 60),
        "test": head_sentences(CONLL / "test.txt", tmp_path / "test.txt", 60),
        "max_length": 64,
        "output_dir": str(tmp_path / "prep"),
    }
    raw["strategy"] = {"name": "auto"}
    raw["train"] |= {"epochs": 1, "output_dir": str(tmp_path / "train"),
                     "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    raw["recommend"] = {"probe_folds": 2, "output_dir": str(tmp_path / "rec")}
    raw["tune"] = {"search": "grid", "num_trials": 1, "max_concurrent_trials": 1,
                   "search_space": {"train.lr": "choice([1.0e-4])"},
                   "output_dir": str(tmp_path / "tune")}  # fmt: skip
    raw["registry"] = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "model_name": "ner"}
    raw["evaluate"] = {"output_dir": str(tmp_path / "eval"), "latency_rows": 0}
    raw["pipeline"] = {"local_root": str(tmp_path / "pipeline")}
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)

    result = ftpipe("run", "-c", str(config_path), timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    root = next(Path(config.pipeline.local_root).glob("ftpipe-finetune-*"))
    for task in ("prep", "recommend", "tune", "train", "evaluate", "register", "promote"):
        assert (root / task).is_dir(), sorted(p.name for p in root.iterdir())
    recommendation = json.loads(next((root / "recommend").rglob("recommendation.json")).read_text())
    assert recommendation["measurements"]["unit"] == "entity tokens"
    assert recommendation["strategy"] not in ("feature-extraction", "p-tuning", "prompt-tuning")

    client = MlflowClient(config.registry.tracking_uri)
    version = client.get_model_version("ner", "1")
    assert "ftpipe.eval.entity_f1" in version.tags, sorted(version.tags)
    assert version.tags["ftpipe.gate.split"] == "test"
    assert str(client.get_model_version_by_alias("ner", "champion").version) == "1"
