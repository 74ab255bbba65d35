"""Tracking: one MLflow run per training run (or Tune trial), and evaluation results.

`TrainingRun` is what the training side calls; it never registers a model:

    with TrainingRun(config) as run:            # params, lineage tags, prep artifacts
        outcome = train_local(config, ...)      # its reports call run.log_metrics(m, step)
    # only here, after a clean exit, is the run FINISHED; `register` refuses any other status

An exception ends the run FAILED (KILLED for Ctrl-C) and propagates. Tune trials pass the
sweep's `parent_run_id` and become nested runs under it. The run id is also written to
`train.output_dir/tracking.json`, where `ftpipe evaluate` and `ftpipe register` find it.

In between, the run is MLflow's active (fluent) run, which samples system metrics and nests;
MLflow's global URIs point at the store only while the run starts and ends (`scoped_mlflow`),
so the caller's stay as they were. Everything else goes through an explicit client.

A process killed outright (SIGKILL, OOM, a lost node) cannot end its run. Runs therefore record
their process (`ftpipe.host`, `ftpipe.pid`, `ftpipe.pidns`, `ftpipe.pid_start`), and a new run
of the same config (same `ftpipe.config_hash`) ends as KILLED, tagged
`ftpipe.stop_reason=process_gone`, every run of that config still RUNNING whose process is gone
from this host. A sweep ends its trials' runs that Tune stopped without letting them close
(`end_child_runs`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from ftpipe.artifacts import absolute_tracking_uri, localize
from ftpipe.config.schema import Config, RegistryConfig
from ftpipe.data.prepared import PrepDir
from ftpipe.registry.client import connect, experiment_id, retry, scoped_mlflow
from ftpipe.registry.lineage import lineage_tags
from ftpipe.registry.links import link_to_best_trial, record_best_trial
from ftpipe.registry.live import NOT_SCORES, LiveMetrics, log_metric_batch, metric_key
from ftpipe.registry.lock import process_gone, process_identity
from ftpipe.registry.params import flatten, headline_params, split_params
from ftpipe.train.outcome import write_record

log = logging.getLogger(__name__)

_BATCH = 100
"""MLflow's cap on params, tags or metrics per logging call (params and tags)."""

STOP_REASON = "ftpipe.stop_reason"
"""Run tag: why a run was ended by someone other than its own process."""
_PROCESS = "ftpipe."
"""Prefix of the run's `process_identity` tags (host, pid, pidns, pid_start)."""


class TrainingRun:
    """An MLflow run around one training run; see the module docstring.

    Attributes:
        run_id: The run's id, once entered.
        client: The MLflow client, once entered.
    """

    def __init__(
        self,
        config: Config,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        pipeline_run_id: str | None = None,
        tune_trial_id: str | None = None,
        deepspeed_config: Mapping[str, Any] | None = None,
        record_dir: str | Path | None = None,
        searched: Mapping[str, str] | None = None,
    ):
        """Describe the run; nothing is logged before `__enter__`.

        Args:
            config: The run's resolved config (logged flattened, and hashed for lineage).
            run_name: Display name; the strategy and config hash by default.
            parent_run_id: A sweep's run, making this a nested trial run.
            pipeline_run_id: The pipeline run (else FTPIPE_PIPELINE_RUN_ID / KFP_RUN_ID).
            tune_trial_id: The Tune trial (else FTPIPE_TUNE_TRIAL_ID).
            deepspeed_config: The resolved DeepSpeed config, logged as deepspeed.json.
            record_dir: Where tracking.json goes; `train.output_dir` by default, and nowhere
                for trial runs (their output directories are Tune's).
            searched: A sweep's search space (dotted path to sampler): those parameters show
                the sampler instead of the config's value.
        """
        self.config = config
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self.pipeline_run_id = pipeline_run_id
        self.tune_trial_id = tune_trial_id
        self.deepspeed_config = deepspeed_config
        self.searched = dict(searched or {})
        if record_dir is None and parent_run_id is None:
            record_dir = config.train.output_dir
        self.record_dir = Path(record_dir) if record_dir is not None else None
        self.run_id: str | None = None
        self.client: MlflowClient | None = None

    def __enter__(self) -> TrainingRun:
        config = self.config
        uri = config.registry.tracking_uri
        self.client = connect(config.registry)
        tags = lineage_tags(config, None, self.pipeline_run_id, self.tune_trial_id)
        tags |= process_tags()
        name = self.run_name or f"{config.strategy.name}-{tags['ftpipe.config_hash'][:8]}"
        experiment = experiment_id(self.client, config.registry.experiment_name)
        end_abandoned_runs(self.client, experiment, tags["ftpipe.config_hash"])
        with scoped_mlflow(uri):  # the system metrics monitor keeps the URI it starts with
            active = retry(
                lambda: mlflow.start_run(
                    experiment_id=experiment,
                    run_name=name,
                    nested=self.parent_run_id is not None or mlflow.active_run() is not None,
                    parent_run_id=self.parent_run_id,
                    tags=tags,
                    log_system_metrics=config.registry.log_system_metrics,
                ),
                "start a run",
            )
        self.run_id = active.info.run_id
        try:
            self._log_inputs()
            if not (self.searched or self.parent_run_id or self.tune_trial_id):
                link_to_best_trial(self.client, experiment, self.run_id, tags)
        except BaseException:
            with scoped_mlflow(uri):
                mlflow.end_run("FAILED")
            raise
        self._record("RUNNING")
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        status = "FINISHED"
        if kind is not None:
            status = "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED"
            if self.tune_trial_id and self._ended_by_its_sweep():
                return False
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            with scoped_mlflow(self.config.registry.tracking_uri):
                mlflow.end_run(status)
        else:  # ended elsewhere or on another thread: set the status directly
            retry(lambda: self.client.set_terminated(self.run_id, status), "end the run")
        self._record(status)
        return False  # never swallow the training error

    def _ended_by_its_sweep(self) -> bool:
        """Whether the sweep has already ended this trial's run (`end_child_runs`).

        Tune stops a trial (ASHA) by interrupting it; the interruption can reach this exit
        after the sweep has ended the run FINISHED with its reason, which must stand.
        """
        run = retry(lambda: self.client.get_run(self.run_id), "read the run's status")
        return run.info.status != "RUNNING"

    def end_child_runs(self, stops: Mapping[str, tuple[str, str]]) -> list[str]:
        """End this run's children that trials left open, or that failed as Tune stopped them.

        Tune ends a trial's process once it stops the trial (ASHA) or has its last result, so
        the trial's run stays RUNNING, or ends FAILED when the stop interrupts it. Tune's own
        verdict on the trial (`stops`) then says how the run ends.

        Args:
            stops: Tune trial id to (status, reason): the status (FINISHED, KILLED or FAILED)
                and `ftpipe.stop_reason` its run ends with if it is RUNNING, or FAILED while
                Tune saw no error. A RUNNING child of a trial not named here ends KILLED with
                reason `trial_ended_without_closing_its_run`.

        Returns:
            The ids of the runs ended. Every trial's run named in `stops` gets its reason, also
            one that ended itself.
        """
        experiment = self.client.get_run(self.run_id).info.experiment_id
        children = retry(
            lambda: self.client.search_runs(
                [experiment], f"tags.mlflow.parentRunId = '{self.run_id}'"
            ),
            "find the trial runs",
        )
        ended = []
        for child in children:
            trial, was = child.data.tags.get("ftpipe.tune_trial_id", ""), child.info.status
            status, why = stops.get(trial, ("KILLED", "trial_ended_without_closing_its_run"))
            if was == "RUNNING" or (was == "FAILED" and trial in stops and status != was):
                _end(self.client, child.info.run_id, status, why)
                log.info("Ended the run of trial %s as %s (%s)", trial, status, why)
                ended.append(child.info.run_id)
            elif trial in stops and STOP_REASON not in child.data.tags:  # closed itself
                _say_why(self.client, child.info.run_id, why)
        return ended

    def live(self) -> LiveMetrics:
        """A picklable sink for the training loop's live metrics, logging into this run."""
        return LiveMetrics(absolute_tracking_uri(self.config.registry.tracking_uri), self.run_id)

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Log the numeric entries of `metrics` at `step`."""
        log_metric_batch(self.client, self.run_id, metrics, step)

    def log_summary(self, best: Mapping[str, Any], prefix: str = "best/") -> None:
        """Log the exported (best) model's evaluation as `best/<metric>`, one value each.

        The loop's bookkeeping (the ranking `score`, counters, throughput) is left out: the
        curves hold those, and a second copy of a metric under another name misleads.
        """
        scores = {prefix + k: v for k, v in best.items() if k not in NOT_SCORES}
        self.log_metrics(scores, int(best.get("step", 0)))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log more parameters (new keys: MLflow refuses to change a logged value)."""
        log_params(self.client, self.run_id, params)

    def record_best_trial(self, trial_id: str) -> None:
        """On a sweep's run: name its best trial, linked both ways (`ftpipe.registry.links`)."""
        record_best_trial(self.client, self.run_id, trial_id)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or directory (sweep results, plots, ...)."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, value: Any, artifact_file: str) -> None:
        """Upload a JSON document."""
        self.client.log_dict(self.run_id, value, artifact_file)

    def _log_inputs(self) -> None:
        config = self.config
        raw = config.model_dump(mode="json")
        # Pod settings say where stages ran, not what was trained: a file, not parameters.
        self.log_dict(raw, "config.json")
        raw.pop("pipeline")
        params = headline_params(config) | flatten(raw)
        # A sweep's run shows what it searched where the config's single value would be.
        params |= {path: f"searched: {text}" for path, text in self.searched.items()}
        prep = PrepDir(localize(config.data.output_dir))
        if prep.label_map_path.is_file():
            params["labels.id2label"] = json.loads(prep.label_map_path.read_text())["id2label"]
        log_params(self.client, self.run_id, params)
        for path, artifact_dir in (
            (prep.stats_path, "prep"),
            (prep.label_map_path, "prep"),
            (prep.fingerprint_path, "prep"),
            (Path(config.recommend.output_dir) / "recommendation.json", "recommend"),
            (Path(config.recommend.output_dir) / "recommendation.txt", "recommend"),
        ):
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path), artifact_dir)
        if self.deepspeed_config is not None:
            self.log_dict(dict(self.deepspeed_config), "deepspeed.json")

    def _record(self, status: str) -> None:
        if self.record_dir is None:
            return
        record = {
            "run_id": self.run_id,
            "status": status,
            "tracking_uri": self.config.registry.tracking_uri,
            "experiment_name": self.config.registry.experiment_name,
        }
        write_record(self.record_dir, record)


def process_tags() -> dict[str, str]:
    """This process as run tags (`ftpipe.host`, `ftpipe.pid`, ...); see `end_abandoned_runs`."""
    return {_PROCESS + key: value for key, value in process_identity().items()}


def end_abandoned_runs(client: MlflowClient, experiment: str, config_hash: str) -> list[str]:
    """End as KILLED the RUNNING runs of a config whose process is gone from this host.

    Args:
        client: A client of the store.
        experiment: The experiment id to search.
        config_hash: The `ftpipe.config_hash` of the runs.

    Returns:
        The ids of the runs ended.
    """
    runs = retry(
        lambda: client.search_runs(
            [experiment],
            f"tags.`ftpipe.config_hash` = '{config_hash}' AND attributes.status = 'RUNNING'",
        ),
        "find unfinished runs",
    )
    ended = []
    for run in runs:
        tags = run.data.tags
        process = {k.removeprefix(_PROCESS): v for k, v in tags.items() if k.startswith(_PROCESS)}
        if not process_gone(process):
            continue
        _end(client, run.info.run_id, "KILLED", "process_gone")
        log.warning(
            "Run %s of this config was left RUNNING by pid %s on %s, which is gone: ended it "
            "as KILLED", run.info.run_id, process.get("pid"), process.get("host"),
        )  # fmt: skip
        ended.append(run.info.run_id)
    return ended


def _end(client: MlflowClient, run_id: str, status: str, why: str) -> None:
    """End a run another process left open, saying why."""
    _say_why(client, run_id, why)
    retry(lambda: client.set_terminated(run_id, status), "end the run")


def _say_why(client: MlflowClient, run_id: str, why: str) -> None:
    retry(lambda: client.set_tag(run_id, STOP_REASON, why), "tag the run's stop reason")


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log parameters; values over the length limit go to `params/<key>.json` artifacts."""
    short, long = split_params(params)
    entries = [Param(k, v) for k, v in short.items()]
    for start in range(0, len(entries), _BATCH):
        chunk = entries[start : start + _BATCH]
        retry(lambda c=chunk: client.log_batch(run_id, params=c), "log params")
    if long:
        with tempfile.TemporaryDirectory(prefix="ftpipe-params-") as staging:
            for artifact, text in long.items():
                target = Path(staging, artifact)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            client.log_artifacts(run_id, staging)


def run_status(registry: RegistryConfig, run_id: str) -> str | None:
    """A run's status (FINISHED, FAILED, KILLED, RUNNING), or None if there is no such run."""
    try:
        return connect(registry).get_run(run_id).info.status
    except MlflowException:
        return None


def log_evaluation(
    evaluation: Any,
    config: Config,
    run_id: str | None = None,
    model_config: Config | None = None,
) -> str:
    """Log an `ftpipe.stages.evaluate.Evaluation` to MLflow and return the run id.

    Into `run_id` (the training run) when given, without changing its status; otherwise into a
    new run named after the model, tagged with the model's lineage. Metrics are prefixed by the
    split scored (`test/`, or `eval/` without a test split); files go under
    `evaluation/<fingerprint[:12]>/`, so evaluations on different held-out sets never overwrite
    each other.
    """
    client = connect(config.registry)
    owned = run_id is None
    if owned:
        tags = lineage_tags(model_config) if model_config is not None else {}
        tags |= {"ftpipe.model_ref": evaluation.model, "ftpipe.stage": "evaluate"}
        run = retry(
            lambda: client.create_run(
                experiment_id(client, config.registry.experiment_name),
                run_name=f"evaluate-{Path(evaluation.model).name}",
                tags=tags,
            ),
            "start an evaluation run",
        )
        run_id = run.info.run_id
    try:
        metrics = {f"{evaluation.split}/{k}": v for k, v in evaluation.metrics.items()}
        now = int(time.time() * 1000)
        entries = [Metric(metric_key(k), float(v), now, 0) for k, v in metrics.items()]
        tags = [
            RunTag("ftpipe.eval.fingerprint", evaluation.fingerprint),
            RunTag("ftpipe.eval.model_ref", evaluation.model),
            RunTag("ftpipe.eval.split", evaluation.split),
        ]
        retry(lambda: client.log_batch(run_id, metrics=entries, tags=tags), "log evaluation")
        client.log_artifacts(run_id, evaluation.output_dir, evaluation_dir(evaluation.fingerprint))
    except BaseException:
        if owned:
            client.set_terminated(run_id, "FAILED")
        raise
    if owned:
        retry(lambda: client.set_terminated(run_id, "FINISHED"), "end the evaluation run")
    return run_id


def evaluation_dir(fingerprint: str) -> str:
    """Artifact directory of the evaluation on one held-out set."""
    return f"evaluation/{fingerprint[:12]}"
