"""Links between the runs of one pipeline run: sweep, trials, final training, model version.

A person reading MLflow should get from any of them to the others by a tag:

* a trial run is a child of its sweep's run (`mlflow.parentRunId`) and names its Tune trial
  (`ftpipe.tune_trial_id`);
* the sweep's run names its best trial and that trial's run (`ftpipe.best_trial_id`,
  `ftpipe.best_trial_run_id`); the best trial's run says so (`ftpipe.best_trial=true`);
* the final training run, which trains the best trial's config, names that trial, its run
  and the sweep's run; the trial's run names the training run back (`ftpipe.trained_by_run_id`);
* the training run names the model version registered from it (`ftpipe.model_version`), and
  the version names the run (`ftpipe.run_id`) and the pipeline run (`ftpipe.pipeline_run_id`).

The training run finds its trial through the pipeline run both share, so the link needs no
argument passed from the tune step to the train step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from ftpipe.registry.client import retry
from ftpipe.registry.lineage import NONE

log = logging.getLogger(__name__)

TRIAL_TAG = "ftpipe.tune_trial_id"
"""Run tag: the Tune trial the run is, or (on the final training run) whose config it trains."""
BEST_TRIAL_TAG = "ftpipe.best_trial_id"
"""Sweep-run tag: the best trial."""
BEST_TRIAL_RUN_TAG = "ftpipe.best_trial_run_id"
"""Sweep-run tag: the best trial's run."""
SWEEP_RUN_TAG = "ftpipe.sweep_run_id"
"""Training-run tag: the sweep whose best config it trains."""
TRIAL_RUN_TAG = "ftpipe.tune_trial_run_id"
"""Training-run tag: the run of the trial whose config it trains."""
TRAINED_BY_TAG = "ftpipe.trained_by_run_id"
"""Trial-run tag: the final training run of its config."""
VERSION_TAG = "ftpipe.model_version"
"""Training-run tag: the registered version of its model, as NAME/VERSION."""
PENDING_DESCRIPTION = (
    "Registered from run {run} as the challenger; the promotion gate has not decided yet."
)
"""A new version's description, until the gate's decision replaces it."""


def record_best_trial(client: MlflowClient, sweep_run_id: str, trial_id: str) -> str | None:
    """Tag the sweep's run with its best trial, and the trial's run as the best.

    Args:
        client: A client of the store.
        sweep_run_id: The sweep's run.
        trial_id: The best Tune trial.

    Returns:
        The best trial's run id, or None when the trial left no run.
    """
    experiment = client.get_run(sweep_run_id).info.experiment_id
    found = retry(
        lambda: client.search_runs(
            [experiment],
            f"tags.mlflow.parentRunId = '{sweep_run_id}' AND tags.`{TRIAL_TAG}` = '{trial_id}'",
        ),
        "find the best trial's run",
    )
    trial_run = found[0].info.run_id if found else None
    tags = {BEST_TRIAL_TAG: trial_id} | ({BEST_TRIAL_RUN_TAG: trial_run} if trial_run else {})
    _tag(client, sweep_run_id, tags)
    if trial_run:
        _tag(client, trial_run, {"ftpipe.best_trial": "true"})
    return trial_run


def link_to_best_trial(
    client: MlflowClient, experiment: str, run_id: str, tags: Mapping[str, str]
) -> None:
    """Link a training run to the best trial of its pipeline run's sweep, both ways.

    Nothing happens outside a pipeline run, or when the pipeline run had no sweep.

    Args:
        client: A client of the store.
        experiment: The experiment of the training run (and of the sweep).
        run_id: The training run.
        tags: Its lineage tags (`ftpipe.pipeline_run_id` is read).
    """
    pipeline = tags.get("ftpipe.pipeline_run_id", NONE)
    if pipeline == NONE:
        return
    sweeps = retry(
        lambda: client.search_runs(
            [experiment],
            f"tags.`ftpipe.pipeline_run_id` = '{pipeline}' AND tags.`{BEST_TRIAL_TAG}` LIKE '%'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        ),
        "find the pipeline run's sweep",
    )
    if not sweeps:
        return
    sweep = sweeps[0].data.tags
    links = {SWEEP_RUN_TAG: sweeps[0].info.run_id, TRIAL_TAG: sweep[BEST_TRIAL_TAG]}
    if BEST_TRIAL_RUN_TAG in sweep:
        links[TRIAL_RUN_TAG] = sweep[BEST_TRIAL_RUN_TAG]
        _tag(client, sweep[BEST_TRIAL_RUN_TAG], {TRAINED_BY_TAG: run_id})
    _tag(client, run_id, links)
    log.info("Training the config of trial %s (sweep run %s)", links[TRIAL_TAG],
             links[SWEEP_RUN_TAG])  # fmt: skip


def link_registered(client: MlflowClient, version: ModelVersion) -> None:
    """Link a new version to its logged model and run, and describe it until the gate decides.

    Idempotent: a registration finished again changes nothing that is already there.
    """
    name, number = version.name, str(version.version)
    if logged_model_id(version):
        link_logged_model(client, version)
    if version.run_id:
        _tag(client, version.run_id, {VERSION_TAG: f"{name}/{number}"})
    if not version.description:  # the gate's decision replaces it (ftpipe.registry.promote)
        description = PENDING_DESCRIPTION.format(run=version.run_id)
        retry(lambda: client.update_model_version(name, number, description), "describe it")


def link_logged_model(client: MlflowClient, version: ModelVersion) -> None:
    """List the version on its logged model, which the MLflow UI then shows as registered.

    An MLflow server does this itself when it creates the version; a client writing to a
    database directly does not (only `mlflow.register_model` adds it, client-side).
    """
    model_id = logged_model_id(version)
    model = retry(lambda: client.get_logged_model(model_id), "read the logged model")
    listed = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
    entry = {"name": version.name, "version": str(version.version)}
    if entry in [{k: str(v) for k, v in e.items()} for e in listed]:
        return
    value = json.dumps([*listed, entry])
    retry(
        lambda: client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: value}),
        "link the logged model to its version",
    )


def logged_model_id(version: ModelVersion) -> str | None:
    """The logged model a version was registered from (SQL stores keep only its source URI)."""
    source = version.source or ""
    return version.model_id or (
        source.removeprefix("models:/") if source.startswith("models:/m-") else None
    )


def _tag(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    entries = [RunTag(k, v) for k, v in tags.items()]
    retry(lambda: client.log_batch(run_id, tags=entries), "link the runs")
