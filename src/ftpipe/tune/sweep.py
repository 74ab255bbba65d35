"""The Ray Tune sweep: one Ray Train run per trial, Ray Train V2's recommended pattern.

Each trial is a small Tune function that builds the trial's config (the base config with the
sampled dotted paths set) and runs a TorchTrainer for it, whose evaluations reach Tune through
`TuneReportCallback`; ASHA stops a trial by stopping that function. The driver asks for no
GPU: only the trials' Ray Train workers do.

Everything a trial shares is absolute: the prep output (prep runs once, before the sweep) and
the feature cache, so feature-extraction trials run the frozen backbone once per sweep.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ftpipe.artifacts import absolute, absolute_tracking_uri, localize
from ftpipe.config import Config
from ftpipe.config.load import apply_overrides, validate_config
from ftpipe.config.rules import rules_for
from ftpipe.config.schema import canonical_json
from ftpipe.data.prepared import PrepDir
from ftpipe.errors import FtpipeError
from ftpipe.train.outcome import Outcome, finish
from ftpipe.train.run_storage import RunStorage
from ftpipe.tune.report import stop_reason, trial_rows, write_plots, write_results
from ftpipe.tune.space import Sampler, parse_space

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep leaves behind (all under `tune.output_dir/<sweep name>`)."""

    directory: Path
    metric: str
    best_config: Path
    best_metrics: dict[str, Any]
    best_checkpoint: str
    results: Path
    final: Outcome | None
    summary: dict[str, Any]
    """best.json: the metric, best score and config, best trial, trial counts."""


RUN_CONTROLS = ("max_concurrent_trials", "time_budget_s", "final")
"""tune keys that change how a sweep runs, not what it searches: resuming may change them."""


def sweep_name(config: Config) -> str:
    """A stable name per config (run controls aside), so `--resume` finds the sweep again."""
    raw = config.model_dump(mode="json")
    for key in RUN_CONTROLS:
        raw["tune"].pop(key)
    return f"sweep-{hashlib.sha256(canonical_json(raw).encode()).hexdigest()[:10]}"


Track = Callable[..., AbstractContextManager[Any]]
"""Opens the tracking run around the sweep and each trial (the stage passes
`ftpipe.registry.tracking.TrainingRun`): called with a config and the keywords `run_name`,
`record_dir`, `searched` (the space), `parent_run_id` or `tune_trial_id`; what it yields has
`run_id`, `live()` (a picklable sink for the loop's live metrics), `log_metrics(metrics)`,
`log_params(params)`, `log_artifact(path, directory)`, `record_best_trial(trial_id)` and
`end_child_runs(stops)` (trial id to the (status, stop reason) its run, if still open, ends
with)."""

EARLY_STOPPED = "early_stopped_by_scheduler"
"""Stop reason of a trial ASHA stopped. Its run ends FINISHED: what it logged until then is a
complete, if shorter, result."""


def run_sweep(config: Config, track: Track, resume: bool = False) -> SweepOutcome:
    """Run (or resume) the sweep, write its outputs, then the final step (`tune.final`).

    Raises:
        FtpipeError: On an invalid search space, a sweep that exists (without `resume`) or is
            missing (with it), or a sweep in which no trial reported a metric.
    """
    from ftpipe.train.ray_cluster import ensure_ray
    from ftpipe.train.ray_train import check_storage_reach, higher_is_better

    space = dict(config.tune.search_space) or _suggested_space(config)
    grid_search = config.tune.search == "grid"
    samplers = parse_space(config, space, grid=grid_search)
    base = _absolute_paths(config)
    base_raw = base.model_dump(mode="json")
    metric = _metric_name(config)
    mode = "max" if higher_is_better(config) else "min"
    name = sweep_name(config)
    outputs = Path(config.tune.output_dir).absolute()
    directory = outputs / name
    ensure_ray(config.train.ray_address)
    storage = RunStorage.open(config.tune.storage or outputs)
    check_storage_reach(storage, "tune.storage")

    # The sweep is one MLflow run, its parameters the space searched; each trial a run nested
    # under it.
    with track(base, run_name=name, record_dir=outputs, searched=space) as sweep_run:
        outcome = _sweep(config, base_raw, samplers, grid_search, metric, mode, name, storage,
                         (track, sweep_run), resume)  # fmt: skip
        _log_sweep_result(sweep_run, outcome, samplers)
        for path in (outcome.results, outcome.best_config, directory / "best.json",
                     directory / "metric_vs_lr.png", directory / "trials.png"):  # fmt: skip
            sweep_run.log_artifact(path, "sweep")
    return outcome


def _sweep(config, base_raw, samplers, grid_search, metric, mode, name, storage, parent, resume):
    """Run the trials, then write the results, the best config and the final step."""
    from ray import tune

    directory = Path(config.tune.output_dir).absolute() / name
    track, sweep_run = parent
    parent_run_id = sweep_run.run_id
    trainable = tune.with_parameters(
        _trial, base=base_raw, directory=str(directory), storage=storage.uri(name), track=track,
        parent_run_id=parent_run_id,
    )  # fmt: skip
    # The trial function only coordinates its Ray Train run, whose workers hold the CPUs and
    # GPUs. Tune needs a non-empty request: a token of memory, so even a small share of a CPU
    # cannot leave a trial's last worker without room.
    trainable = tune.with_resources(trainable, {"CPU": 0, "memory": 2**20})
    tuner = _tuner(config, trainable, samplers, grid_search, (metric, mode), storage,
                   (name, directory), resume)  # fmt: skip
    grid = tuner.fit()
    # Tune ends a trial's process when ASHA stops it or its last result is in, often before
    # the trial's own `with track(...)` closes: end those runs with Tune's verdict.
    sweep_run.end_child_runs(_trial_stops(grid, metric, base_raw))

    try:
        best = grid.get_best_result(metric=metric, mode=mode, scope="all")
    except RuntimeError:
        best = None
    if best is None or best.metrics is None or metric not in best.metrics:
        raise FtpipeError(
            f"No trial of {directory} reported {metric}; see the trial errors above. Check the "
            "search space and train settings with `ftpipe train` on one point first."
        )
    rows = trial_rows(grid, metric, mode, lambda params: _trial_config(base_raw, params))
    directory.mkdir(parents=True, exist_ok=True)  # Tune's own state may live elsewhere
    results = write_results(rows, directory)
    write_plots(grid, rows, directory, metric)
    history = best.metrics_dataframe
    # Stable: among tied evaluations the first is the one that exported its model.
    top = history.sort_values(metric, ascending=mode == "min", kind="stable").iloc[0]
    best_config = _trial_config(base_raw, best.config)
    best_yaml = directory / "best.yaml"
    best_yaml.write_text(yaml.safe_dump(best_config.model_dump(mode="json"), sort_keys=False))
    checkpoint = storage.reach(str(top.get("checkpoint_path", "")))
    stopped = sum(row.get("stop_reason") == "stopped by ASHA" for row in rows)
    summary = {"metric": metric, "best": float(top[metric]), "config": best.config,
               "checkpoint": checkpoint, "trial": best.path, "trial_id": _trial_id(best) or "",
               "trials": len(rows), "stopped_early": stopped}  # fmt: skip
    (directory / "best.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log.info("Best trial: %s=%.4f with %s", metric, top[metric], best.config)
    final = _final_step(config, best_config, checkpoint, directory, top.to_dict())
    return SweepOutcome(directory, metric, best_yaml, top.to_dict(), checkpoint, results, final,
                        summary)  # fmt: skip


def _tuner(config, trainable, samplers, grid_search, objective, storage, where, resume):
    """A new Tuner for the sweep, or the stored one with `resume`.

    Raises:
        FtpipeError: If the sweep exists without `resume`, or is missing with it.
    """
    from ray.tune import RunConfig, TuneConfig, Tuner

    (metric, mode), (name, directory) = objective, where
    state = f"{storage.path}/{name}"  # Tune's own state, where trials can reach it
    exists = Tuner.can_restore(state, storage_filesystem=storage.filesystem)
    if resume:
        if not exists:
            raise FtpipeError(
                f"tune --resume found no sweep at {storage.uri(name)}. Start it without "
                "--resume (the same config gives the same sweep name)."
            )
        log.info("Resuming %s: finished trials are kept, unfinished ones continue",
                 storage.uri(name))  # fmt: skip
        tuner = Tuner.restore(state, trainable=trainable, resume_errored=True,
                              storage_filesystem=storage.filesystem)  # fmt: skip
    else:
        if exists or directory.exists():
            raise FtpipeError(
                f"A sweep of this config already exists at {storage.uri(name)}. Pass --resume "
                "to continue it, or delete it (and its outputs in tune.output_dir) to start "
                "over."
            )
        tuner = Tuner(
            trainable,
            param_space={path: s.to_tune(grid_search) for path, s in samplers.items()},
            tune_config=TuneConfig(
                metric=metric,
                mode=mode,
                search_alg=_search(config, metric, mode),
                scheduler=_scheduler(config, samplers),
                num_samples=config.tune.num_trials,
                max_concurrent_trials=config.tune.max_concurrent_trials,
                time_budget_s=config.tune.time_budget_s,
            ),
            run_config=RunConfig(
                name=name, storage_path=storage.path, storage_filesystem=storage.filesystem
            ),
        )
    return tuner


def _trial(
    params: dict[str, Any], base: dict, directory: str, storage: str, track: Track,
    parent_run_id: str,
) -> None:  # fmt: skip
    """One trial: the base config with the sampled values, trained by Ray Train."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ftpipe.train.ray_train import build_trainer

    config = _trial_config(base, params)
    context = tune.get_context()
    # Beside Tune's own record of the trial, in the sweep's storage (checkpoints must outlive
    # the Ray session, whose local trial directory is temporary).
    trial = Path(context.get_trial_dir()).name
    config = validate_config(
        apply_overrides(config.model_dump(mode="json"), [f"train.output_dir={directory}/{trial}"])
    )
    # Metrics go to the trial's run as they happen: ASHA may end this process at any report.
    with track(config, parent_run_id=parent_run_id,
               tune_trial_id=context.get_trial_id()) as run:  # fmt: skip
        trainer = build_trainer(config, f"train-{context.get_trial_id()}",
                                RunStorage.open(f"{storage}/{trial}"),
                                callbacks=[TuneReportCallback()],
                                on_metrics=run.live())  # fmt: skip
        trainer.fit()


def _trial_stops(grid: Any, metric: str, base: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each trial's id to the (status, stop reason) its run ends with if it is still open."""
    stops = {}
    for result in grid:
        trial = _trial_id(result)
        history = result.metrics_dataframe
        if trial is None:
            continue
        if result.error is not None or history is None or metric not in history:
            stops[trial] = ("FAILED", "error")
            continue
        why = stop_reason(_trial_config(base, result.config or {}), history.iloc[-1])
        stops[trial] = {
            "stopped by ASHA": ("FINISHED", EARLY_STOPPED),
            "early stop (train.patience)": ("FINISHED", "early_stopped_by_patience"),
        }.get(why, ("FINISHED", "completed"))
    return stops


def _trial_id(result: Any) -> str | None:
    """A Tune result's trial id: from its metrics, or from its directory's name."""
    match = re.search(r"_([0-9a-f]+_\d{5})_", Path(result.path).name)
    trial = (result.metrics or {}).get("trial_id") or (match.group(1) if match else None)
    return None if trial is None else str(trial)


def _trial_config(base: dict[str, Any], params: dict[str, Any]) -> Config:
    overrides = [f"{path}={yaml.safe_dump(value).strip()}" for path, value in params.items()]
    return validate_config(apply_overrides(base, overrides))


def _absolute_paths(config: Config) -> Config:
    """Trials run in other directories: pin the shared paths to this one."""
    raw = config.model_dump(mode="json")
    raw["data"]["output_dir"] = absolute(config.data.output_dir)
    raw["train"]["cache_dir"] = str(Path(config.train.cache_dir).absolute())
    raw["registry"]["tracking_uri"] = absolute_tracking_uri(config.registry.tracking_uri)
    if not PrepDir(localize(config.data.output_dir)).fingerprint_path.exists():
        raise FtpipeError(
            f"{config.data.output_dir} is not a prep output. Run `ftpipe prep` with the same "
            "config before the sweep: trials share one prep."
        )
    return validate_config(raw)


def _suggested_space(config: Config) -> dict[str, str]:
    path = localize(config.recommend.output_dir) / "recommendation.json"
    if not path.exists():
        return {}
    log.info("tune.search_space is empty: using the space suggested in %s", path)
    return json.loads(path.read_text())["search_space"]


def _metric_name(config: Config) -> str:
    return PrepDir.open(config.data.output_dir).task.resolve_metric(config.train.metric)[0]


def _search(config: Config, metric: str, mode: str):
    if config.tune.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(metric=metric, mode=mode, seed=config.seed)
        return ConcurrencyLimiter(searcher, max_concurrent=config.tune.max_concurrent_trials)
    from ray.tune.search import BasicVariantGenerator

    # A search algorithm of our own must carry the concurrency limit itself.
    return BasicVariantGenerator(
        random_state=config.seed, max_concurrent=config.tune.max_concurrent_trials
    )


HYPERBAND_BRACKETS = 3
"""Brackets of `tune.scheduler=hyperband`: the first cut after 1x, 3x, 9x the grace period."""


def _scheduler(config: Config, samplers: dict[str, Sampler]):
    if config.tune.scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    grace = grace_epochs(config, samplers)
    brackets = HYPERBAND_BRACKETS if config.tune.scheduler == "hyperband" else 1
    log.info("Sweep scheduler: %s, first cut after %g epoch(s)", config.tune.scheduler, grace)
    # Epochs, not evaluations, are the time axis: the first cut comes after the same share of
    # training whatever train.eval_every_steps is.
    return ASHAScheduler(
        time_attr="epoch",
        max_t=10**6,
        grace_period=grace,
        reduction_factor=config.tune.reduction_factor,
        brackets=brackets,
    )


def grace_epochs(config: Config, samplers: dict[str, Sampler]) -> float:
    """Epochs every trial trains before the scheduler may stop it (`tune.grace_period`).

    Unset, it comes from the strategies the sweep tries: slow starters (adapters, virtual
    tokens) trail the others early and catch up late, so a cut after one epoch would favour
    whatever starts fast over what ends well. They get half the training, at least an epoch.
    """
    if config.tune.grace_period is not None:
        return config.tune.grace_period
    sampled = samplers.get("strategy.name")
    strategies = sampled.args if sampled is not None else (config.strategy.name,)
    if not any(rules_for(name).slow_start for name in strategies):
        return 1.0
    epochs = samplers.get("train.epochs")
    longest = max(epochs.edge_values()) if epochs is not None else config.train.epochs
    return max(1.0, longest / 2)


def _final_step(config, best_config, checkpoint, directory, metrics) -> Outcome | None:
    if config.tune.final == "none":
        return None
    if config.tune.final == "reuse":
        checkpoint = localize(checkpoint) if checkpoint else ""
        if not checkpoint or not (Path(checkpoint) / "model").is_dir():
            raise FtpipeError(
                f"The best trial's checkpoint {checkpoint or '(none)'} holds no export; set "
                "tune.final=retrain to train the best config again."
            )
        return finish(directory, Path(checkpoint), metrics, metrics)
    from ftpipe.train.ray_train import train_ray

    raw = best_config.model_dump(mode="json")
    retrain = apply_overrides(raw, ["train.train_on_eval=true", f"train.output_dir={directory}"])
    log.info("Retraining the best config on train + eval")
    outcome = train_ray(validate_config(retrain))
    shutil.copy(directory / "result.json", directory / "retrain_result.json")
    return outcome


def _log_sweep_result(run: Any, outcome: SweepOutcome, samplers: dict[str, Sampler]) -> None:
    """The sweep's result on its run: best score, trial counts, best config and trial."""
    summary = outcome.summary
    run.log_metrics({f"best/{outcome.metric}": summary["best"], "trials": summary["trials"],
                     "trials_stopped_early": summary["stopped_early"]})  # fmt: skip
    run.log_params({f"best.{path}": summary["config"].get(path) for path in samplers})
    if summary["trial_id"]:
        run.record_best_trial(summary["trial_id"])
