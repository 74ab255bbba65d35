"""`ftpipe promote`: move the `champion` alias only when the gate says the challenger is better.

Concurrency. MLflow's alias update is last-writer-wins, so promotions of one model run one at
a time, under the promotion lock (ftpipe.registry.lock). Inside the lock, a promotion reads the
champion, decides, tags the version and moves the alias; then it releases the lock.

Each decision also takes the next number of the model's promotion sequence (a registered-model
tag, safe to increment under the lock) and records it on the version with the champion it was
compared with, so the history of decisions is a single chain that can be audited.

Promotion is idempotent: promoting the champion again changes nothing, and deciding again for
the same pair gives the same result (the bootstrap is seeded).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ftpipe.config.schema import Config
from ftpipe.errors import FtpipeError, reason
from ftpipe.registry.client import connect, retry, scoped_mlflow
from ftpipe.registry.evidence import (
    EVAL_PREFIX,
    decision_markdown,
    describe_decision,
    evidence,
    evidence_location,
)
from ftpipe.registry.gate import (
    ENTITY_METRICS,
    MEAN_METRICS,
    OPTIMISTIC,
    Decision,
    Policy,
    Scored,
    decide,
)
from ftpipe.registry.lock import promotion_lock
from ftpipe.registry.versions import CHALLENGER, CHAMPION
from ftpipe.tasks import get_task
from ftpipe.tasks.entities import entity_types, sentence_counts

log = logging.getLogger(__name__)

GATE_PREFIX = "ftpipe.gate."
SEQUENCE_TAG = "ftpipe.promotions"
"""Registered-model tag: how many gate decisions this model has had."""


@dataclass(frozen=True)
class Promotion:
    """The outcome of one `promote` call.

    Attributes:
        name: The registered model.
        version: The challenger version.
        champion_before: The champion version before the call, or None.
        champion_after: The champion version after it, or None.
        decision: The gate's decision (None when the version already was champion).
        sequence: The decision's number in the model's promotion sequence (0: no decision).
    """

    name: str
    version: str
    champion_before: str | None
    champion_after: str | None
    decision: Decision | None
    sequence: int

    @property
    def changed(self) -> bool:
        """Whether the champion alias moved."""
        return self.champion_before != self.champion_after


def policy(config: Config) -> Policy:
    """The gate's rules from the `promote` section (seeded by the run's `seed`).

    The task decides which metrics can drive the gate (`ServingTask.gate_metrics`).

    Raises:
        ConfigError: If the task's gate cannot compare models by `promote.metric`.
    """
    p = config.promote
    return Policy(
        metric=get_task(config.data.task).serving("promote").gate_metric(p.metric),
        margin=p.margin,
        max_class_f1_drop=p.max_class_f1_drop,
        floor=p.floor,
        confidence=p.confidence,
        samples=p.bootstrap_samples,
        seed=config.seed,
        max_latency_ms=p.max_latency_ms,
        max_size_mb=p.max_size_mb,
    )


def promote(config: Config, version: str | None = None, dry_run: bool = False) -> Promotion:
    """Gate version `version` (default: the `challenger` alias) against the champion.

    With `dry_run` the gate decides and nothing is recorded or moved: the pipeline asks first,
    then promotes in a step of its own only when the answer is yes (the gate is seeded, so the
    real call decides the same).

    Raises:
        FtpipeError: If there is no such version, it has no evaluation, or the champion was
            not evaluated on the same held-out set.
    """
    client = connect(config.registry)
    name = config.registry.model_name
    with promotion_lock(client, name, config.promote.lock_timeout_s):
        challenger = _challenger(client, name, version)
        champion = _alias(client, name, CHAMPION)
        # Versions are numbers in some MLflow versions and strings in others: compare text.
        mine_version = str(challenger.version)
        before = str(champion.version) if champion else None
        if before == mine_version:
            return Promotion(name, mine_version, before, before, None, 0)
        fingerprint = challenger.tags.get(f"{EVAL_PREFIX}fingerprint")
        mine = _evidence(client, challenger, fingerprint) if fingerprint else None
        if mine is None:
            raise FtpipeError(
                f"Version {mine_version} of {name} has no evaluation, so the gate has "
                f"nothing to compare. Run `ftpipe evaluate --model models:/{name}/"
                f"{mine_version}` (or evaluate before `ftpipe register`), then promote."
            )
        theirs = None
        if champion is not None:
            theirs = _evidence(client, champion, fingerprint)
            if theirs is None:
                other = champion.tags.get(f"{EVAL_PREFIX}fingerprint", "none")
                raise FtpipeError(
                    f"The champion (version {champion.version} of {name}) was evaluated on "
                    f"held-out set {other[:12]}, the challenger on {fingerprint[:12]}; ftpipe "
                    "never compares models on different sets. Evaluate the champion on the "
                    f"challenger's set: `ftpipe evaluate --model models:/{name}@champion` with "
                    "the same data config, then promote again."
                )
        frames = [
            _predictions(client, record["predictions"]) for record in (mine, theirs) if record
        ]
        names = _names_of(*frames)
        rules = policy(config)
        try:
            decision = decide(
                _scored(frames[0], mine, names, rules.metric),
                _scored(frames[1], theirs, names, rules.metric) if theirs else None,
                rules,
                mine["split"],
            )
        except ValueError as exc:  # same fingerprint, different rows: a corrupted artifact
            raise FtpipeError(
                f"The predictions of versions {mine_version} and {before} do not cover "
                f"the same rows ({exc}); evaluate both again."
            ) from None
        if decision.optimistic:
            log.warning("Version %s of %s: %s", mine_version, name, OPTIMISTIC)
        if dry_run:
            return Promotion(name, mine_version, before, before, decision, 0)
        sequence = _next_sequence(client, name)
        _record(client, challenger, decision, before, fingerprint, sequence)
        after = before
        if decision.promote:
            retry(
                lambda: client.set_registered_model_alias(name, CHAMPION, mine_version),
                "move the champion alias",
            )
            if champion is not None:
                retry(
                    lambda: client.set_model_version_tag(
                        name, before, f"{GATE_PREFIX}replaced_by", mine_version
                    ),
                    "tag the former champion",
                )
            after = mine_version
        return Promotion(name, mine_version, before, after, decision, sequence)


def _challenger(client: MlflowClient, name: str, version: str | None) -> ModelVersion:
    if version is None:
        found = _alias(client, name, CHALLENGER)
        if found is None:
            raise FtpipeError(
                f"{name} has no `{CHALLENGER}` version. Register one with `ftpipe register`, or "
                "name it: `ftpipe promote --version N`."
            )
        return found
    try:
        return retry(lambda: client.get_model_version(name, str(version)), "read the version")
    except MlflowException as exc:
        raise FtpipeError(
            f"Version {version} of {name} does not exist ({reason(exc)}). Check registry."
            "model_name and the version number."
        ) from None


def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return retry(lambda: client.get_model_version_by_alias(name, alias), f"read @{alias}")
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _scored(frame: pd.DataFrame, record: dict, names: tuple[str, ...], metric: str) -> Scored:
    """One model's predictions as label ids in the order `names`, with its budgets' numbers.

    For an entity metric, each row is a sentence whose label and prediction are tags joined
    by spaces: the gate gets its per-sentence entity counts, over the types the tags name.
    """
    metrics = record.get("metrics", {})
    budgets = {"latency_ms": metrics.get("latency_p95_ms"), "size_mb": metrics.get("size_mb")}
    if metric in MEAN_METRICS:
        return Scored.means(_row_sums(frame, metric), **budgets)
    if metric in ENTITY_METRICS:
        types = entity_types(tag for name in names for tag in name.split(" "))
        gold, predicted = ([row.split(" ") for row in frame[c]] for c in ("label", "predicted"))
        return Scored.entities(sentence_counts(gold, predicted, types), types, **budgets)
    ids = {n: i for i, n in enumerate(names)}
    return Scored(
        labels=frame["label"].map(ids).to_numpy(np.int64),
        predicted=frame["predicted"].map(ids).to_numpy(np.int64),
        names=names,
        **budgets,
    )


def _row_sums(frame: pd.DataFrame, metric: str) -> np.ndarray:
    """A causal LM's per-row (numerator, denominator) of `metric`.

    The loss's is the row's summed token loss over its target tokens; a generation score's is
    the score over 1, and rows not generated count (0, 0), so they weigh nothing.
    """
    if metric == "loss":
        return frame[["loss_sum", "tokens"]].to_numpy(np.float64)
    scores = frame[metric].to_numpy(np.float64)
    generated = ~np.isnan(scores)
    return np.stack([np.where(generated, scores, 0.0), generated.astype(np.float64)], axis=1)


def _names_of(*frames: pd.DataFrame) -> tuple[str, ...]:
    # Every label either file mentions, in one order shared by challenger and champion.
    seen: set[str] = set()
    for frame in frames:
        if "label" not in frame:  # a causal LM's rows are texts, not labels
            return ()
        seen |= set(frame["label"].astype(str)) | set(frame["predicted"].astype(str))
    return tuple(sorted(seen))


GATE_COLUMNS = ("row", "label", "predicted", "loss_sum", "tokens", "exact_match", "rouge_l")
"""The predictions columns the gate reads: labels and predictions, or a causal LM's scores."""


def _evidence(client: MlflowClient, version: ModelVersion, fingerprint: str) -> dict | None:
    """A version's evaluation on the held-out set `fingerprint` as the gate reads it, or None."""
    location = evidence_location(version, fingerprint)
    if location is None:
        return None
    if location.startswith("{"):  # versions registered before the pointer kept the record
        return {"split": "eval", **json.loads(location)}
    with tempfile.TemporaryDirectory(prefix="ftpipe-gate-") as tmp:
        summary = json.loads(_fetch(client, f"{location}/evaluation.json", tmp).read_text())
    return evidence(location, summary)


def _fetch(client: MlflowClient, uri: str, directory: str) -> Path:
    """Download an artifact (`runs:/...` in the client's store) into `directory`."""
    store = client.tracking_uri
    try:
        with scoped_mlflow(store):  # some artifact repositories read the global URIs
            return Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=directory, tracking_uri=store, registry_uri=store
                )
            )
    except MlflowException as exc:
        raise FtpipeError(f"Cannot fetch the gate's evidence {uri}: {reason(exc)}.") from None


def _predictions(client: MlflowClient, uri: str) -> pd.DataFrame:
    """An evaluation's predictions file (`runs:/...` in the client's store), sorted by row."""
    with tempfile.TemporaryDirectory(prefix="ftpipe-gate-") as tmp:
        path = _fetch(client, uri, tmp)
        present = set(pq.read_schema(path).names)
        columns = [c for c in GATE_COLUMNS if c in present]
        frame = pd.read_parquet(path, columns=columns)
    if "label" in frame:
        frame[["label", "predicted"]] = frame[["label", "predicted"]].astype(str)
    return frame.sort_values("row", kind="stable").reset_index(drop=True)


def _next_sequence(client: MlflowClient, name: str) -> int:
    # Safe only under the promotion lock: read, add one, write.
    model = retry(lambda: client.get_registered_model(name), "read the model")
    sequence = int(model.tags.get(SEQUENCE_TAG, "0")) + 1
    retry(
        lambda: client.set_registered_model_tag(name, SEQUENCE_TAG, str(sequence)),
        "count the decision",
    )
    return sequence


def _record(
    client: MlflowClient,
    version: ModelVersion,
    decision: Decision,
    champion: str | None,
    fingerprint: str,
    sequence: int,
) -> None:
    """Record the decision on the challenger version.

    A one-sentence description, a few short tags, and the whole evidence as a Markdown file in
    the version's run (named by the tag `ftpipe.gate.evidence`).
    """
    name, number = version.name, str(version.version)
    evidence_file = f"gate/{name}-{number}-decision-{sequence}.md"
    text = decision_markdown(decision, f"{name} version {number}", champion, fingerprint,
                             sequence)  # fmt: skip
    retry(lambda: client.log_text(version.run_id, text, evidence_file), "log the evidence")
    tags = {
        "decision": "promoted" if decision.promote else "rejected",
        "metric": decision.metric,
        "ci": f"[{decision.ci_low:.4f}, {decision.ci_high:.4f}]",
        "split": decision.split,
        "champion_version": champion or "none",
        "sequence": str(sequence),
        "evidence": f"runs:/{version.run_id}/{evidence_file}",
    }
    for key, value in tags.items():
        retry(
            lambda k=key, v=value: client.set_model_version_tag(name, number, GATE_PREFIX + k, v),
            "record the decision",
        )
    description = describe_decision(decision, sequence)
    retry(lambda: client.update_model_version(name, number, description), "describe it")


def describe(promotion: Promotion) -> dict:
    """The outcome as plain data (for JSON output and logs)."""
    return {**asdict(promotion), "changed": promotion.changed}


def write_decision(promotion: Promotion, path: Path) -> None:
    """Write the outcome as JSON (for the pipeline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(describe(promotion), indent=2, sort_keys=True) + "\n")


def champion(config: Config) -> str | None:
    """The version the `champion` alias points at, or None."""
    found = _alias(connect(config.registry), config.registry.model_name, CHAMPION)
    return str(found.version) if found else None
