"""Registered versions: register an export, add a version, name one, attach evaluations.

Registration needs a FINISHED run: a failed or cancelled run never registers anything. A new
version gets the lineage tags and the alias `challenger`; `champion` moves only through the
promotion gate (ftpipe.registry.promote). Stages are never used.

Registration is idempotent, keyed by the export's content hash (`ftpipe.export_sha256`, over
its sorted relative paths and file digests), which is tagged on the logged model and on the
version when they are created:

* the same export registered again gives the same version back (`Registration.reused`);
* a registration killed half-way is finished by the next one: a version without the
  `ftpipe.registration=complete` tag gets its missing tags and the `challenger` alias; a
  logged model that is READY but not registered is registered instead of logged again;
* debris of killed runs is marked and reported (`Registration.orphans`): a logged model of
  the export left PENDING by a process that is gone is finalized FAILED, and a version of the
  model that is not READY, or whose logged model is not, is tagged `ftpipe.orphan=true`.

Two registrations of one export racing each other may still both create a version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ftpipe.config.schema import Config, RegistryConfig
from ftpipe.errors import FtpipeError, reason
from ftpipe.registry.client import connect, experiment_id, retry, scoped_mlflow
from ftpipe.registry.evidence import evaluation_tags
from ftpipe.registry.lineage import lineage_tags, read_fingerprint
from ftpipe.registry.links import link_registered
from ftpipe.registry.model_log import (
    EXPORT_TAG,
    KIND_TAG,
    export_sha256,
    fail_orphan_models,
    log_model,
    reusable_model,
)
from ftpipe.registry.params import flatten
from ftpipe.registry.tracking import end_abandoned_runs, log_params, process_tags
from ftpipe.train.export import Export

CHALLENGER = "challenger"
"""Alias of the latest registered version, the gate's next candidate."""
CHAMPION = "champion"
"""Alias of the version the gate promoted last."""
COMPLETE_TAG = "ftpipe.registration"
"""Version tag set to `complete` once its tags and alias are all set."""
ORPHAN_TAG = "ftpipe.orphan"
"""Version tag: `true` on a version a killed registration left unusable."""


@dataclass(frozen=True)
class Registration:
    """What `register_export` did.

    Attributes:
        version: The registered version, complete, with alias `challenger` unless the export
            was registered completely before.
        reused: The export had been registered before: this is that version.
        orphans: Debris of killed registrations marked on the way, one line each.
    """

    version: ModelVersion
    reused: bool
    orphans: tuple[str, ...] = ()


def register(config: Config, model_dir: str | Path, **options: Any) -> ModelVersion:
    """Register `model_dir` and return its version (`register_export`'s keyword options)."""
    return register_export(config, model_dir, **options).version


def register_export(
    config: Config,
    model_dir: str | Path,
    run_id: str | None = None,
    evaluation: Any | None = None,
    pipeline_run_id: str | None = None,
    tune_trial_id: str | None = None,
) -> Registration:
    """Log `model_dir` and register it as a version of `registry.model_name`, idempotently.

    Args:
        config: The config naming the registry; the model's own config (config.yaml in the
            export) gives its lineage.
        model_dir: The export directory.
        run_id: The training run; it must be FINISHED. None logs into a run of its own.
        evaluation: An `ftpipe.stages.evaluate.Evaluation` of this model, attached as evidence for
            the promotion gate.
        pipeline_run_id: Lineage: the pipeline run.
        tune_trial_id: Lineage: the Tune trial.

    Returns:
        The version (new, finished, or the earlier one of this export) and the orphans marked.

    Raises:
        FtpipeError: If the run did not finish successfully.
    """
    client = connect(config.registry)
    name, digest = config.registry.model_name, export_sha256(model_dir)
    experiments = {experiment_id(client, config.registry.experiment_name)}
    if run_id is not None:
        experiments.add(_finished_run(client, run_id).info.experiment_id)
    orphans = mark_orphans(client, name, digest, sorted(experiments))
    extra = evaluation_tags(evaluation) if evaluation is not None else {}
    existing = find_version(client, name, digest)
    if existing is not None:
        return Registration(finish_version(client, existing, extra), True, orphans)
    version = create_version(
        client, config, model_dir, digest, run_id, pipeline_run_id, tune_trial_id
    )
    return Registration(finish_version(client, version, extra), False, orphans)


def create_version(
    client: MlflowClient,
    config: Config,
    model_dir: str | Path,
    digest: str,
    run_id: str | None = None,
    pipeline_run_id: str | None = None,
    tune_trial_id: str | None = None,
) -> ModelVersion:
    """The first step of a registration: log the export and create its version, no alias.

    A READY logged model of the export in the run is reused rather than logged again. The
    version is tagged with `digest`; `finish_version` completes it.

    Args:
        client: A client of the registry.
        config: The config naming the registry.
        model_dir: The export directory.
        digest: Its `export_sha256`.
        run_id: The training run (FINISHED); None uses (or makes) a registration run.
        pipeline_run_id: Lineage: the pipeline run.
        tune_trial_id: Lineage: the Tune trial.

    Returns:
        The new version.
    """
    model_dir = Path(model_dir)
    model_config = Export.open(model_dir).config
    tags = lineage_tags(
        model_config, read_fingerprint(model_config.data.output_dir), pipeline_run_id,
        tune_trial_id,
    )  # fmt: skip
    if run_id is None:
        run_id = _registration_run(client, config.registry, model_config, tags, digest)
    else:  # What the run recorded at training time wins over what is recomputed now.
        run = client.get_run(run_id)
        tags |= {k: v for k, v in run.data.tags.items() if k.startswith("ftpipe.")}
        tags = {k: v for k, v in tags.items() if k not in process_tags()}
    model_id = reusable_model(client, run_id, digest)
    if model_id is None:
        model_id = log_model(client, run_id, model_dir, digest=digest).model_id
    kind = client.get_logged_model(model_id).tags[KIND_TAG]
    tags |= {KIND_TAG: kind, "ftpipe.run_id": run_id, EXPORT_TAG: digest}
    return _create(client, config.registry.model_name, f"models:/{model_id}", run_id, tags)


def finish_version(
    client: MlflowClient, version: ModelVersion, tags: dict[str, str]
) -> ModelVersion:
    """The last step of a registration: set missing tags, then alias `challenger` once.

    A version already tagged `ftpipe.registration=complete` keeps its aliases (registering an
    export again never moves `challenger` back to it); only tags that differ are set.

    Args:
        client: A client of the registry.
        version: A version from `create_version` or `find_version`.
        tags: Tags it must have (evaluation evidence).

    Returns:
        The version as it is now.
    """
    name, number = version.name, str(version.version)
    link_registered(client, version)
    for key, value in tags.items():
        if version.tags.get(key) != value:
            retry(
                lambda k=key, v=value: client.set_model_version_tag(name, number, k, v),
                "tag the version",
            )
    if version.tags.get(COMPLETE_TAG) != "complete":
        retry(
            lambda: client.set_registered_model_alias(name, CHALLENGER, number),
            "set the challenger alias",
        )
        retry(
            lambda: client.set_model_version_tag(name, number, COMPLETE_TAG, "complete"),
            "mark the registration complete",
        )
    return retry(lambda: client.get_model_version(name, number), "read the version")


def find_version(client: MlflowClient, name: str, digest: str) -> ModelVersion | None:
    """The usable version of `name` registered from the export `digest`, if any (the oldest).

    A version that is not READY or is tagged `ftpipe.orphan` does not count.
    """
    found = retry(
        lambda: client.search_model_versions(
            f"name = '{name}' AND tags.`{EXPORT_TAG}` = '{digest}'"
        ),
        "find the export's version",
    )
    usable = [v for v in found if v.status == "READY" and v.tags.get(ORPHAN_TAG) != "true"]
    return min(usable, key=lambda v: int(v.version)) if usable else None


def mark_orphans(
    client: MlflowClient, name: str, digest: str, experiments: list[str]
) -> tuple[str, ...]:
    """Mark what killed registrations left; see the module docstring.

    Args:
        client: A client of the registry.
        name: The registered model.
        digest: The export being registered: its PENDING logged models are checked.
        experiments: Where its logged models may be.

    Returns:
        One line per orphan marked.
    """
    marked, failed = fail_orphan_models(client, digest, experiments)
    versions = retry(lambda: client.search_model_versions(f"name = '{name}'"), "list versions")
    for version in versions:
        model_id = (version.source or "").removeprefix("models:/")
        broken = version.status != "READY" or model_id in failed
        if broken and version.tags.get(ORPHAN_TAG) != "true":
            retry(
                lambda v=version: client.set_model_version_tag(name, v.version, ORPHAN_TAG, "true"),
                "tag the orphan version",
            )
            marked.append(f"version {version.version} of {name}: {version.status}, no usable model")
    return tuple(marked)


def add_version(
    client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    """Register a logged model as the next version of `name` and alias it `challenger`.

    Safe when several processes register at once (colliding version numbers are retried).

    Args:
        client: A client of the registry.
        name: The registered model.
        model_uri: The logged model (models:/m-...) or a runs:/ URI.
        run_id: The run the model was logged in.
        tags: The version's tags.

    Returns:
        The new version.
    """
    return finish_version(client, _create(client, name, model_uri, run_id, tags), {})


def _create(
    client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    """Create the next version of `name` (and `name` itself if new), without alias."""
    try:
        retry(lambda: client.create_registered_model(name), f"create registered model {name}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    # MLflow's SQL and file registries look a logged model up through the global tracking URI.
    with scoped_mlflow(client.tracking_uri):
        return retry(
            lambda: client.create_model_version(
                name, model_uri, run_id=run_id, tags=tags, model_id=model_id, await_creation_for=0
            ),
            f"register a version of {name}",
        )


def _finished_run(client: MlflowClient, run_id: str) -> Any:
    """The run `run_id`, which must be FINISHED."""
    run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        raise FtpipeError(
            f"MLflow run {run_id} is {run.info.status}: a failed or cancelled run never "
            "registers a model. Train again; register the model of a run that finished."
        )
    return run


def _registration_run(
    client: MlflowClient,
    registry: RegistryConfig,
    model_config: Config,
    tags: dict[str, str],
    digest: str,
) -> str:
    """A run of its own for a model trained without tracking: lineage and params, FINISHED.

    The run of an earlier registration of the same export is reused.
    """
    experiment = experiment_id(client, registry.experiment_name)
    earlier = retry(
        lambda: client.search_runs(
            [experiment],
            f"tags.`{EXPORT_TAG}` = '{digest}' AND tags.`ftpipe.stage` = 'register' "
            "AND attributes.status = 'FINISHED'",
        ),
        "find an earlier registration run",
    )
    if earlier:
        return earlier[0].info.run_id
    end_abandoned_runs(client, experiment, tags["ftpipe.config_hash"])
    own = tags | {"ftpipe.stage": "register", EXPORT_TAG: digest} | process_tags()
    run = retry(
        lambda: client.create_run(
            experiment, run_name=f"register-{tags['ftpipe.config_hash'][:8]}", tags=own
        ),
        "start a registration run",
    )
    try:
        log_params(client, run.info.run_id, flatten(model_config.model_dump(mode="json")))
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    retry(lambda: client.set_terminated(run.info.run_id, "FINISHED"), "end the run")
    return run.info.run_id


def tag_evaluation(registry: RegistryConfig, ref: str, evaluation: Any) -> ModelVersion | None:
    """Attach an evaluation to the version `ref` names (models:/NAME/N or @alias), if it does.

    Args:
        registry: The `registry` config section.
        ref: The evaluated model's reference.
        evaluation: Its `ftpipe.stages.evaluate.Evaluation`, logged to MLflow.

    Returns:
        The tagged version, or None when `ref` names no registered version.
    """
    if not ref.startswith("models:/"):
        return None
    client = connect(registry)
    version = resolve_version(client, ref)
    if version is not None:
        for key, value in evaluation_tags(evaluation).items():
            retry(
                lambda k=key, v=value: client.set_model_version_tag(
                    version.name, str(version.version), k, v
                ),
                "tag the version",
            )
    return version


def resolve_version(client: MlflowClient, ref: str) -> ModelVersion | None:
    """The registered version a `models:/NAME/VERSION` or `models:/NAME@ALIAS` URI names.

    Args:
        client: A client of the registry.
        ref: A model reference.

    Returns:
        The version, or None when `ref` names none (another scheme, or a logged model).

    Raises:
        FtpipeError: If `ref` has a version's form but names no version.
    """
    if not ref.startswith("models:/"):
        return None
    path = ref.removeprefix("models:/").rstrip("/")
    try:
        if "@" in path:
            name, alias = path.rsplit("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, _, number = path.rpartition("/")
        if name and number.isdigit():
            return client.get_model_version(name, number)
    except MlflowException as exc:
        raise FtpipeError(
            f"{ref} does not name a registered model version: {reason(exc)}."
        ) from None
    return None  # models:/<model_id>: a logged model, not a version
