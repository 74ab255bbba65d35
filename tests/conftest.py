"""Shared fixtures: a tiny tokenizer built from scratch, config and file builders.

Every test also runs inside `isolated_mlflow_globals`: MLflow's process-wide tracking and
registry URIs, its active experiment and every MLFLOW_* environment variable are put back as
they were, so no test sees another's (the order is random, see pyproject.toml).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ftpipe.config import Config, apply_overrides
from ftpipe.config.load import validate_config

# As in an activated environment: processes Ray starts for jobs find this venv's `ftpipe`.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

_MLFLOW_STATE = (
    ("mlflow.tracking._tracking_service.utils", "_tracking_uri"),
    ("mlflow.tracking._model_registry.utils", "_registry_uri"),
    ("mlflow.tracking.fluent", "_active_experiment_id"),
)
"""MLflow's private module state behind get_tracking_uri, get_registry_uri, set_experiment.

Read raw (None when unset): the public getters fall back to defaults, so restoring what they
return would turn "unset" into "set to the default"."""


def _mlflow_state() -> dict[tuple[str, str], Any]:
    # A module not imported yet holds its initial state, None: nothing to read.
    return {
        (module, name): getattr(sys.modules[module], name, None) if module in sys.modules else None
        for module, name in _MLFLOW_STATE
    }


@pytest.fixture(autouse=True)
def isolated_mlflow_globals():
    """Restore MLflow's global URIs, active experiment and MLFLOW_* variables after each test."""
    state = _mlflow_state()
    env = {key: value for key, value in os.environ.items() if key.startswith("MLFLOW_")}
    yield
    for (module, name), value in state.items():
        if module not in sys.modules:
            continue
        if name == "_tracking_uri":  # the setter also resets the tracer, which caches the URI
            sys.modules[module].set_tracking_uri(value)
        else:
            setattr(sys.modules[module], name, value)
    for key in [k for k in os.environ if k.startswith("MLFLOW_") and k not in env]:
        del os.environ[key]
    os.environ.update(env)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note the repository's own store (`mlflow.db`, `outputs/`) before any test runs."""
    from tests.helpers import REPO
    from tests.isolation import Footprint

    session.config.stash[_FOOTPRINT] = Footprint.take(REPO)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when a test wrote to the repository's store instead of tmp_path."""
    from tests.helpers import REPO
    from tests.isolation import Footprint

    before = session.config.stash.get(_FOOTPRINT, None)
    changes = Footprint.take(REPO).changes_since(before) if before else []
    if changes:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (
            "A test wrote to the repository's own store; every test must write under tmp_path "
            "and track to a temporary MLflow store: " + "; ".join(changes[:20])
        )
        if reporter is not None:
            reporter.write_line(message, red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_FOOTPRINT = pytest.StashKey["Footprint"]()
"""The repository's store as the session found it."""


TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "a", "my", "order", "is", "late", "refund", "please", "card", "was", "charged",
    "twice", "hello", "help", "login", "password", "reset", "app", "crash", "good", "bad",
    "##s", "##ed", "##ing",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local model directory holding a 29-token WordPiece tokenizer (BERT-style)."""
    from tests.helpers import save_wordpiece_tokenizer

    directory = tmp_path_factory.mktemp("tiny-tokenizer")
    save_wordpiece_tokenizer(directory, TINY_VOCAB)
    return directory


@pytest.fixture
def make_config(tmp_path: Path, tiny_tokenizer_dir: Path):
    """Build a Config from data-section keys, on the tiny tokenizer, writing under tmp_path."""

    def build(*overrides: str, **data: Any) -> Config:
        raw = {
            "data": {"output_dir": str(tmp_path / "prep"), "max_length": 16, **data},
            "model": {"name": str(tiny_tokenizer_dir)},
        }
        return validate_config(apply_overrides(raw, overrides))

    return build


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """A local model directory: a random-init 2-layer BERT classifier (safetensors) + tokenizer."""
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
    )
    directory = tmp_path_factory.mktemp("tiny-model")
    BertForSequenceClassification(config).save_pretrained(directory, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_tokenizer_dir / name, directory / name)
    return directory


@pytest.fixture(scope="session")
def ner_trained(tmp_path_factory: pytest.TempPathFactory):
    """A tiny BERT entity tagger trained on template sentences, with a test file held out.

    Returns (config, export directory, working directory); trained once per session.
    """
    from ftpipe.data import run_prep
    from ftpipe.train.local import train_local
    from tests.ner_helpers import ner_model_dir, write_sentences

    tmp = tmp_path_factory.mktemp("ner")
    config = validate_config({
        "seed": 5,
        "data": {
            "task": "token-classification",
            "train": write_sentences(tmp / "train.jsonl", 240, seed=0),
            "test": write_sentences(tmp / "test.jsonl", 40, seed=1),
            "output_dir": str(tmp / "prep"),
            "max_length": 24,
            "stride": 6,
            "eval_fraction": 0.2,
            "duplicates": "keep",
            "on_error": "drop",  # template sentences repeat across the files
        },
        "model": {"name": str(ner_model_dir(tmp / "base"))},
        "strategy": {"name": "full"},
        "train": {"batch_size": 16, "epochs": 6, "lr": 5e-3, "head_lr": 5e-2,
                  "output_dir": str(tmp / "train"), "cache_dir": str(tmp / "cache")},
    })  # fmt: skip
    run_prep(config)
    return config, train_local(config).model_dir, tmp


@pytest.fixture(scope="session")
def lm_chat_trained(tmp_path_factory: pytest.TempPathFactory):
    """A tiny Llama tuned on ticket-routing conversations: (config, training outcome)."""
    from tests.lm_helpers import chat_lm_dir, trained

    base = chat_lm_dir(tmp_path_factory.mktemp("chat-lm"))
    return trained(tmp_path_factory.mktemp("lm-chat-run"), base, chat=True)


@pytest.fixture(scope="session")
def lm_completion_trained(tmp_path_factory: pytest.TempPathFactory):
    """The same tiny Llama tuned on the tickets as prompt + completion: (config, outcome)."""
    from tests.lm_helpers import chat_lm_dir, trained

    base = chat_lm_dir(tmp_path_factory.mktemp("completion-lm"))
    return trained(tmp_path_factory.mktemp("lm-completion-run"), base, chat=False)
