"""Evaluation evidence on registered versions: the tags the promotion gate reads.

Pure data (no store access): `evaluation_tags` builds a version's tags from an
`ftpipe.stages.evaluate.Evaluation`, and `evidence` reads one back. The evidence is keyed by the
held-out set's fingerprint, so one version can hold evaluations on several sets and the gate
always picks the one on the challenger's set. Attaching tags to an existing version is
`ftpipe.registry.versions.tag_evaluation`.
"""

from __future__ import annotations

import json
from typing import Any

from mlflow.entities.model_registry import ModelVersion

from ftpipe.errors import FtpipeError
from ftpipe.registry.tracking import evaluation_dir

EVAL_PREFIX = "ftpipe.eval."
"""Prefix of the version tags that carry evaluations."""

_KEPT_METRICS = (
    "accuracy",
    "macro_f1",
    "ece",
    "entity_f1",
    "latency_p95_ms",
    "size_mb",
    "rows",
)
"""Metrics copied into the evidence (the gate's budgets read latency and size)."""


def evaluation_tags(evaluation: Any) -> dict[str, str]:
    """Version tags carrying an evaluation: readable headline values, and the gate's evidence.

    Args:
        evaluation: An `ftpipe.stages.evaluate.Evaluation` that was logged to MLflow (has a run id).

    Returns:
        The tags, keys prefixed `EVAL_PREFIX`.

    Raises:
        FtpipeError: If the evaluation was not logged to MLflow.
    """
    if evaluation.run_id is None:
        raise FtpipeError(
            f"The evaluation in {evaluation.output_dir} was not logged to MLflow, so the gate "
            "could not fetch its predictions. Run `ftpipe evaluate` again with the registry "
            "reachable."
        )
    record = {
        "fingerprint": evaluation.fingerprint,
        "split": evaluation.split,
        "run_id": evaluation.run_id,
        "predictions": f"runs:/{evaluation.run_id}/{evaluation_dir(evaluation.fingerprint)}"
        "/predictions.parquet",
        "metrics": {k: evaluation.metrics[k] for k in _KEPT_METRICS if k in evaluation.metrics},
    }
    tags = {
        f"{EVAL_PREFIX}fingerprint": evaluation.fingerprint,
        f"{EVAL_PREFIX}{evaluation.fingerprint[:16]}": json.dumps(record, sort_keys=True),
    }
    for key in ("accuracy", "macro_f1", "ece", "entity_f1", "token_accuracy"):
        if key in evaluation.metrics:
            tags[f"{EVAL_PREFIX}{key}"] = f"{evaluation.metrics[key]:.6f}"
    return tags


def evidence(version: ModelVersion, fingerprint: str) -> dict[str, Any] | None:
    """A version's evaluation on the held-out set `fingerprint`, or None.

    Its `split` is the prep split scored, "test" or "eval" (evaluations recorded before test
    splits existed scored eval and say so).
    """
    raw = version.tags.get(f"{EVAL_PREFIX}{fingerprint[:16]}")
    return {"split": "eval", **json.loads(raw)} if raw else None
