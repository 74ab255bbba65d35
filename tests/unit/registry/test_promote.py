"""The promotion gate through the registry (SQLite), on synthetic evaluations: no training."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from ftpipe.errors import FtpipeError
from ftpipe.registry.evidence import evaluation_tags
from ftpipe.registry.promote import promote
from ftpipe.registry.tracking import log_evaluation
from ftpipe.registry.versions import add_version
from tests.unit.registry.helpers import (
    corrupt,
    swap,
    synthetic_predictions,
    with_registry,
    write_evaluation,
)

NAMES = ("bad", "good", "neutral")
LABELS = np.random.default_rng(0).choice(3, size=400, p=[0.45, 0.45, 0.10])
FINGERPRINT = "a" * 64


@pytest.fixture
def config(make_config, tracking_uri, model_name):
    return with_registry(make_config(train="unused.csv"), tracking_uri, model_name)


def new_version(
    config, tmp_path, predicted, fingerprint=FINGERPRINT, split="eval", **metrics
) -> str:
    """Evaluate (synthetically), log the evaluation to a run, register a version of it."""
    frame = synthetic_predictions(LABELS, predicted, NAMES)
    directory = tmp_path / f"eval-{time.monotonic_ns()}"
    evaluation = write_evaluation(directory, frame, fingerprint, split, **metrics)
    evaluation.run_id = log_evaluation(evaluation, config)
    client = MlflowClient(config.registry.tracking_uri)
    version = add_version(
        client, config.registry.model_name, f"runs:/{evaluation.run_id}/model",
        evaluation.run_id, evaluation_tags(evaluation),
    )  # fmt: skip
    return str(version.version)


def champion(config) -> str:
    client = MlflowClient(config.registry.tracking_uri)
    return str(client.get_model_version_by_alias(config.registry.model_name, "champion").version)


def gate_tags(config, version) -> dict[str, str]:
    client = MlflowClient(config.registry.tracking_uri)
    tags = client.get_model_version(config.registry.model_name, version).tags
    return {k.removeprefix("ftpipe.gate."): v for k, v in tags.items() if "gate." in k}


def evidence_page(config, version) -> str:
    """The gate's Markdown evidence for the version's latest decision, as the tag names it."""
    client = MlflowClient(config.registry.tracking_uri)
    run_id, _, path = gate_tags(config, version)["evidence"].removeprefix("runs:/").partition("/")
    return Path(client.download_artifacts(run_id, path)).read_text()


def description(config, version) -> str:
    client = MlflowClient(config.registry.tracking_uri)
    return client.get_model_version(config.registry.model_name, version).description


def test_first_model_then_noise_then_a_real_improvement(config, tmp_path):
    first = corrupt(LABELS, 0.8, 3, seed=1)
    v1 = new_version(config, tmp_path, first)
    result = promote(config, v1)
    assert result.changed and champion(config) == v1
    assert gate_tags(config, v1)["champion_version"] == "none"

    # Better on paper by two rows out of 400: noise. Kept, with the evidence on the version.
    v2 = new_version(config, tmp_path, swap(LABELS, first, fix=20, spoil=18, seed=2))
    result = promote(config)  # the challenger alias: the latest registration
    assert result.version == v2 and not result.changed and champion(config) == v1
    tags = gate_tags(config, v2)
    assert tags["decision"] == "rejected" and tags["champion_version"] == v1
    # A few short tags, one sentence, and the rest on a page a person reads: no JSON blobs.
    assert tags["metric"] == "macro_f1"
    low, high = json.loads(tags["ci"])
    assert low < 0 < high
    assert not any(value.startswith("{") for value in tags.values()), tags
    said = description(config, v2)
    assert said.startswith("Not promoted by gate decision 2: kept: failed improvement")
    assert said.count(". ") == 0 and said.endswith(".")
    page = evidence_page(config, v2)
    assert page.startswith(f"# Promotion gate: {config.registry.model_name} version {v2}, not")
    assert "| improvement | no |" in page and f"(version {v1})" in page
    assert all(f"| {name} | " in page for name in NAMES)

    v3 = new_version(config, tmp_path, swap(LABELS, first, fix=45, spoil=2, seed=3))
    result = promote(config, v3)
    assert result.changed and result.champion_before == v1 and champion(config) == v3
    assert gate_tags(config, v3)["decision"] == "promoted"
    assert description(config, v3).startswith("Promoted to champion by gate decision 3")
    assert gate_tags(config, v1)["replaced_by"] == v3

    # Idempotent: the champion again changes nothing; the rejected one is rejected again.
    assert promote(config, v3).decision is None and champion(config) == v3
    again = promote(config, v2)
    assert not again.changed and champion(config) == v3 and not again.decision.promote


def test_a_class_collapse_blocks_promotion(config, tmp_path):
    base = corrupt(LABELS, 0.8, 3, seed=1)
    promote(config, new_version(config, tmp_path, base))
    collapsed = LABELS.copy()
    neutral = np.flatnonzero(LABELS == 2)
    collapsed[neutral[: len(neutral) * 2 // 3]] = 0  # the small class mostly lost
    v2 = new_version(config, tmp_path, collapsed)

    registry = config.registry
    by_accuracy = with_registry(
        config, registry.tracking_uri, registry.model_name, "promote.metric=accuracy"
    )
    result = promote(by_accuracy, v2)

    page = evidence_page(config, v2)
    assert "| improvement | yes |" in page and "| no_class_collapse | no |" in page
    assert not result.changed and champion(config) != v2


def test_budgets_come_from_the_evaluation(config, tmp_path):
    registry = config.registry
    limited = with_registry(
        config, registry.tracking_uri, registry.model_name,
        "promote.max_latency_ms=20", "promote.max_size_mb=100",
    )  # fmt: skip
    good = corrupt(LABELS, 0.9, 3, seed=4)
    slow = new_version(config, tmp_path, good, latency_p95_ms=35.0, size_mb=10.0)
    assert not promote(limited, slow).changed
    assert "| latency | no |" in evidence_page(config, slow)
    fast = new_version(config, tmp_path, good, latency_p95_ms=5.0, size_mb=10.0)
    assert promote(limited, fast).changed


def test_models_evaluated_on_different_sets_are_never_compared(config, tmp_path):
    v1 = new_version(config, tmp_path, corrupt(LABELS, 0.8, 3, seed=1))
    promote(config, v1)
    v2 = new_version(config, tmp_path, LABELS.copy(), fingerprint="b" * 64)
    with pytest.raises(FtpipeError, match="never compares models on different sets"):
        promote(config, v2)
    assert champion(config) == v1


def test_a_version_without_evaluation_is_refused(config, tmp_path):
    client = MlflowClient(config.registry.tracking_uri)
    experiment = client.get_experiment_by_name(config.registry.experiment_name)
    run = client.create_run(experiment.experiment_id)
    version = add_version(client, config.registry.model_name, "runs:/x/model", run.info.run_id, {})
    with pytest.raises(FtpipeError, match="has no evaluation"):
        promote(config, str(version.version))


def test_a_stale_lock_of_a_dead_process_is_broken(config, tmp_path):
    client = MlflowClient(config.registry.tracking_uri)
    lock = f"{config.registry.model_name}.promotion-lock"
    old = f"{time.time() - 3600:.3f}"
    client.create_registered_model(
        lock, tags={"ftpipe.lock.token": "dead", "ftpipe.lock.acquired_at": old}
    )
    v1 = new_version(config, tmp_path, corrupt(LABELS, 0.8, 3, seed=1))

    assert promote(config, v1).changed
    assert client.search_registered_models(f"name LIKE '{lock}%'") == []  # broken, then released


def test_the_evidence_names_the_split_and_an_eval_split_is_called_optimistic(
    config, tmp_path, caplog
):
    from ftpipe.registry.gate import OPTIMISTIC

    predicted = corrupt(LABELS, 0.8, 3, seed=1)
    on_test = new_version(config, tmp_path, predicted, split="test")
    client = MlflowClient(config.registry.tracking_uri)
    tags = client.get_model_version(config.registry.model_name, on_test).tags
    # A short pointer to the evaluation's files, which hold the split and the predictions.
    where = tags[f"ftpipe.eval.{FINGERPRINT[:16]}"]
    assert where.startswith("runs:/") and where.endswith(f"/evaluation/{FINGERPRINT[:12]}")
    with caplog.at_level("WARNING", logger="ftpipe.registry.promote"):
        result = promote(config, on_test, dry_run=True)
    assert result.decision.split == "test" and result.decision.optimistic is False
    assert "on the test split" in result.decision.reason
    assert OPTIMISTIC not in result.decision.reason and not caplog.records

    # Without a test split the gate still decides, on eval, and says the interval is optimistic.
    on_eval = new_version(config, tmp_path, predicted, fingerprint="c" * 64)
    with caplog.at_level("WARNING", logger="ftpipe.registry.promote"):
        result = promote(config, on_eval)
    assert result.changed and result.decision.optimistic
    assert result.decision.reason.endswith(OPTIMISTIC)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and OPTIMISTIC in warned[0] and f"Version {on_eval}" in warned[0]
    assert gate_tags(config, on_eval)["split"] == "eval"
    assert description(config, on_eval).endswith("optimistic: the eval split also chose it.")
    page = evidence_page(config, on_eval)
    assert "| Optimistic | yes |" in page and page.rstrip().splitlines()[2].endswith(OPTIMISTIC)
