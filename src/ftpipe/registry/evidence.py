"""Evaluation evidence on registered versions: the tags the promotion gate reads.

Pure data (no store access): `evaluation_tags` builds a version's tags from an
`ftpipe.stages.evaluate.Evaluation`, and `evidence` reads one back. The evidence is keyed by the
held-out set's fingerprint, so one version can hold evaluations on several sets and the gate
always picks the one on the challenger's set. Attaching tags to an existing version is
`ftpipe.registry.versions.tag_evaluation`.
"""

from __future__ import annotations

import time
from typing import Any

from mlflow.entities.model_registry import ModelVersion

from ftpipe.errors import FtpipeError
from ftpipe.registry.gate import OPTIMISTIC, Decision
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
    # Where the evaluation's files are (evaluation.json, predictions.parquet): the gate reads
    # them there, so the version carries a short, readable pointer and no copy.
    where = f"runs:/{evaluation.run_id}/{evaluation_dir(evaluation.fingerprint)}"
    tags = {
        f"{EVAL_PREFIX}fingerprint": evaluation.fingerprint,
        f"{EVAL_PREFIX}{evaluation.fingerprint[:16]}": where,
    }
    for key in ("accuracy", "macro_f1", "ece", "entity_f1", "token_accuracy"):
        if key in evaluation.metrics:
            tags[f"{EVAL_PREFIX}{key}"] = f"{evaluation.metrics[key]:.6f}"
    return tags


def evidence_location(version: ModelVersion, fingerprint: str) -> str | None:
    """Where a version's evaluation on the held-out set `fingerprint` is (runs:/RUN/DIR).

    None when the version has no evaluation on that set.
    """
    return version.tags.get(f"{EVAL_PREFIX}{fingerprint[:16]}")


def evidence(location: str, summary: dict[str, Any]) -> dict[str, Any]:
    """The gate's record of an evaluation: its split, predictions file and budget metrics.

    Args:
        location: Its `evidence_location`.
        summary: Its evaluation.json, read from there.
    """
    metrics = summary.get("metrics", {})
    return {
        "split": summary.get("split", "eval"),
        "predictions": f"{location}/predictions.parquet",
        "metrics": {k: metrics[k] for k in _KEPT_METRICS if k in metrics},
    }


def describe_decision(decision: Decision, sequence: int) -> str:
    """The version's description: the gate's decision and its reason, in one sentence."""
    verdict = "Promoted to champion" if decision.promote else "Not promoted"
    why = decision.reason.removesuffix(f". {OPTIMISTIC}")
    caveat = "" if decision.split == "test" else ", optimistic: the eval split also chose it"
    return f"{verdict} by gate decision {sequence}: {why}{caveat}."


def decision_markdown(
    decision: Decision, version: str, champion: str | None, fingerprint: str, sequence: int
) -> str:
    """The gate's whole evidence for one decision, as a Markdown page a person can read.

    Args:
        decision: The gate's decision.
        version: The challenger, e.g. "tiny version 3".
        champion: The champion version it was compared with, or None.
        fingerprint: The held-out set's fingerprint.
        sequence: The decision's number in the model's promotion sequence.
    """
    verdict = "promoted to champion" if decision.promote else "not promoted"
    champion_value = "none" if decision.champion is None else f"{decision.champion:.4f}"
    decided = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# Promotion gate: {version}, {verdict}",
        "",
        decision.reason,
        "",
        "| | |",
        "|---|---|",
        f"| Decision | number {sequence} of this model, {decided} |",
        f"| Metric | {decision.metric} |",
        f"| Challenger | {decision.challenger:.4f} |",
        f"| Champion | {champion_value} (version {champion or 'none'}) |",
        f"| Interval | [{decision.ci_low:.4f}, {decision.ci_high:.4f}] |",
        f"| Held-out set | {decision.split} split, fingerprint {fingerprint[:12]} |",
        f"| Optimistic | {'yes' if decision.optimistic else 'no'} |",
        "",
        "## Checks",
        "",
        "| Check | Passed |",
        "|---|---|",
        *(f"| {name} | {'yes' if ok else 'no'} |" for name, ok in decision.checks.items()),
    ]
    if decision.class_f1_deltas:
        lines += ["", "## F1 change per class (challenger minus champion)", "",
                  "| Class | Change |", "|---|---|"]  # fmt: skip
        deltas = sorted(decision.class_f1_deltas.items(), key=lambda item: item[1])
        lines += [f"| {name} | {delta:+.4f} |" for name, delta in deltas]
    return "\n".join(lines) + "\n"
