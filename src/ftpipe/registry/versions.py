"""Registered versions: register an export, add a version, name one, attach evaluations.

Registration needs a FINISHED run: a failed or cancelled run never registers anything. A new
version gets the lineage tags and the alias `challenger`; `champion` moves only through the
promotion gate (ftpipe.registry.promote). Stages are never used.
"""

from __future__ import annotations

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
from ftpipe.registry.model_log import log_model
from ftpipe.registry.params import flatten
from ftpipe.registry.tracking import log_params
from ftpipe.train.export import Export

CHALLENGER = "challenger"
"""Alias of the latest registered version, the gate's next candidate."""
CHAMPION = "champion"
"""Alias of the version the gate promoted last."""


def register(
    config: Config,
    model_dir: str | Path,
    run_id: str | None = None,
    evaluation: Any | None = None,
    pipeline_run_id: str | None = None,
    tune_trial_id: str | None = None,
) -> ModelVersion:
    """Log `model_dir` and register it as a new version of `registry.model_name`.

    Args:
        config: The config naming the registry; the model's own config (config.yaml in the
            export) gives its lineage.
        model_dir: The export directory.
        run_id: The training run; it must be FINISHED. None logs into a new run.
        evaluation: An `ftpipe.stages.evaluate.Evaluation` of this model, attached as evidence for
            the promotion gate.
        pipeline_run_id: Lineage: the pipeline run.
        tune_trial_id: Lineage: the Tune trial.

    Returns:
        The new version, with alias `challenger`.

    Raises:
        FtpipeError: If the run did not finish successfully.
    """
    client = connect(config.registry)
    model_dir = Path(model_dir)
    model_config = Export.open(model_dir).config
    tags = lineage_tags(
        model_config, read_fingerprint(model_config.data.output_dir), pipeline_run_id,
        tune_trial_id,
    )  # fmt: skip
    if run_id is None:
        run_id = _registration_run(client, config.registry, model_config, tags)
    else:
        run = client.get_run(run_id)
        if run.info.status != "FINISHED":
            raise FtpipeError(
                f"MLflow run {run_id} is {run.info.status}: a failed or cancelled run never "
                "registers a model. Train again; register the model of a run that finished."
            )
        # What the run recorded at training time wins over what is recomputed now.
        tags |= {k: v for k, v in run.data.tags.items() if k.startswith("ftpipe.")}
    info = log_model(client, run_id, model_dir)
    tags |= {"ftpipe.model_kind": info.metadata["ftpipe_kind"], "ftpipe.run_id": run_id}
    if evaluation is not None:
        tags |= evaluation_tags(evaluation)
    return add_version(client, config.registry.model_name, info.model_uri, run_id, tags)


def add_version(
    client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    """Register a logged model as the next version of `name` and alias it `challenger`.

    Safe when several processes register at once: the model is created by whichever comes
    first, and version numbers that collide are retried.

    Args:
        client: A client of the registry.
        name: The registered model.
        model_uri: The logged model (models:/m-...) or a runs:/ URI.
        run_id: The run the model was logged in.
        tags: The version's tags.

    Returns:
        The new version.
    """
    try:
        retry(lambda: client.create_registered_model(name), f"create registered model {name}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    # MLflow's SQL and file registries look a logged model up through the global tracking URI.
    with scoped_mlflow(client.tracking_uri):
        version = retry(
            lambda: client.create_model_version(
                name, model_uri, run_id=run_id, tags=tags, model_id=model_id, await_creation_for=0
            ),
            f"register a version of {name}",
        )
    retry(
        lambda: client.set_registered_model_alias(name, CHALLENGER, str(version.version)),
        "set the challenger alias",
    )
    return version


def _registration_run(
    client: MlflowClient, registry: RegistryConfig, model_config: Config, tags: dict[str, str]
) -> str:
    """A run of its own for a model trained without tracking: lineage and params, FINISHED."""
    run = retry(
        lambda: client.create_run(
            experiment_id(client, registry.experiment_name),
            run_name=f"register-{tags['ftpipe.config_hash'][:8]}",
            tags=tags | {"ftpipe.stage": "register"},
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
