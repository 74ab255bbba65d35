"""Logging an export as an MLflow model, registering versions, and fetching them back.

* Logged from its directory: the files are copied into the model's artifacts and never
  loaded into memory. MLflow would load a model to check its input example and to infer its
  pip requirements; the signature is given, the requirements are pinned from what is
  installed, and the input-example check is switched off (`_Flavor`).
* LoRA/IA3: the adapter alone is logged (with the tokenizer, labels and manifest), and the
  manifest names the base model and revision it loads onto, even when the export also holds
  merged weights.
* Registration needs a FINISHED run: a failed or cancelled run never registers anything. A new
  version gets the lineage tags and the alias `challenger`; `champion` moves only through the
  promotion gate (ftpipe.registry.promote). Stages are never used.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema

from ftpipe.config.schema import Config, RegistryConfig
from ftpipe.errors import FtpipeError, reason
from ftpipe.registry.client import connect, experiment_id, retry
from ftpipe.registry.lineage import lineage_tags, read_fingerprint
from ftpipe.registry.params import flatten
from ftpipe.registry.pyfunc import EXPORT_ARTIFACT
from ftpipe.registry.tracking import evaluation_dir, log_params

CHALLENGER = "challenger"
CHAMPION = "champion"
EVAL_PREFIX = "ftpipe.eval."

_REQUIREMENTS = ("torch", "transformers", "peft", "tokenizers", "safetensors", "pandas", "pyyaml")
_MERGED_FILES = ("model.safetensors", "model.safetensors.index.json", "config.json")


class _Flavor:
    """pyfunc's save_model without the input-example check, which would load the model.

    `Model.log` reads `validate_serving_input` and passes every keyword on to the flavor's
    save_model; pyfunc's rejects unknown keywords, so this drops it.
    """

    __name__ = "mlflow.pyfunc"

    @staticmethod
    def save_model(**kwargs: Any) -> Any:
        kwargs.pop("validate_serving_input", None)
        return mlflow.pyfunc.save_model(**kwargs)


def log_model(run_id: str, model_dir: str | Path, name: str = "model") -> Any:
    """Log an export directory as a pyfunc model of run `run_id`; return MLflow's ModelInfo."""
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "ftpipe.json").read_text())
    names = _label_names(model_dir)
    config = export_config(model_dir)
    pairs = config.data.text_pair_column is not None
    inputs = [ColSpec("string", "text")] + ([ColSpec("string", "text_pair")] if pairs else [])
    outputs = [ColSpec("string", "label")] + [ColSpec("double", f"prob_{n}") for n in names]
    example = {"text": ["an example input"]} | ({"text_pair": ["a second text"]} if pairs else {})
    # The logged model belongs to its run's experiment; MLflow takes it from the active one.
    mlflow.set_experiment(experiment_id=mlflow.get_run(run_id).info.experiment_id)
    with _staged(model_dir, manifest) as staged:
        return Model.log(
            artifact_path=None,
            name=name,
            flavor=_Flavor,
            flavor_name="pyfunc.ModelFromCode",
            run_id=run_id,
            python_model=str(Path(__file__).with_name("pyfunc_code.py")),
            artifacts={EXPORT_ARTIFACT: str(staged)},
            signature=ModelSignature(Schema(inputs), Schema(outputs)),
            input_example=pd.DataFrame(example),
            pip_requirements=_requirements(),
            metadata={"ftpipe_kind": json.loads((staged / "ftpipe.json").read_text())["kind"]},
            validate_serving_input=False,
            await_registration_for=0,
        )


@contextmanager
def _staged(model_dir: Path, manifest: dict[str, Any]) -> Iterator[Path]:
    """The directory to log: the export itself, or for an adapter a copy without merged weights."""
    if manifest.get("kind") != "transformers" or "adapter" not in manifest:
        yield model_dir
        return
    with tempfile.TemporaryDirectory(prefix="ftpipe-adapter-") as tmp:
        staged = Path(tmp) / model_dir.name
        shutil.copytree(
            model_dir,
            staged,
            ignore=lambda d, files: [f for f in files if Path(d) == model_dir and _merged(f)],
        )
        (staged / "ftpipe.json").write_text(
            json.dumps(manifest | {"kind": "peft", "merged_on_export": True}, indent=2) + "\n"
        )
        yield staged


def _merged(filename: str) -> bool:
    return filename in _MERGED_FILES or (
        filename.startswith("model-") and filename.endswith(".safetensors")
    )


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
        evaluation: An `ftpipe.evaluate.Evaluation` of this model, attached as evidence for
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
    model_config = export_config(model_dir)
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
    info = log_model(run_id, model_dir)
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
    """
    try:
        retry(lambda: client.create_registered_model(name), f"create registered model {name}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
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


def evaluation_tags(evaluation: Any) -> dict[str, str]:
    """Version tags carrying an evaluation: readable headline values, and the gate's evidence.

    The evidence is keyed by the held-out set's fingerprint, so one version can hold
    evaluations on several sets and the gate always picks the one on the challenger's set.
    """
    if evaluation.run_id is None:
        raise FtpipeError(
            f"The evaluation in {evaluation.output_dir} was not logged to MLflow, so the gate "
            "could not fetch its predictions. Run `ftpipe evaluate` again with the registry "
            "reachable."
        )
    keep = ("accuracy", "macro_f1", "ece", "latency_p95_ms", "size_mb", "rows")
    evidence = {
        "fingerprint": evaluation.fingerprint,
        "run_id": evaluation.run_id,
        "predictions": f"runs:/{evaluation.run_id}/{evaluation_dir(evaluation.fingerprint)}"
        "/predictions.parquet",
        "metrics": {k: evaluation.metrics[k] for k in keep if k in evaluation.metrics},
    }
    tags = {
        f"{EVAL_PREFIX}fingerprint": evaluation.fingerprint,
        f"{EVAL_PREFIX}{evaluation.fingerprint[:16]}": json.dumps(evidence, sort_keys=True),
    }
    for key in ("accuracy", "macro_f1", "ece"):
        if key in evaluation.metrics:
            tags[f"{EVAL_PREFIX}{key}"] = f"{evaluation.metrics[key]:.6f}"
    return tags


def evidence(version: ModelVersion, fingerprint: str) -> dict[str, Any] | None:
    """A version's evaluation on the held-out set `fingerprint`, or None."""
    raw = version.tags.get(f"{EVAL_PREFIX}{fingerprint[:16]}")
    return json.loads(raw) if raw else None


def tag_evaluation(registry: RegistryConfig, ref: str, evaluation: Any) -> ModelVersion | None:
    """Attach an evaluation to the version `ref` names (models:/NAME/N or @alias), if it does."""
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
    """The registered version a `models:/NAME/VERSION` or `models:/NAME@ALIAS` URI names."""
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


def download_export(ref: str, tracking_uri: str | None = None) -> Path:
    """Download the export directory behind a registry URI; cached per logged model.

    Raises:
        FtpipeError: If the URI names nothing, or no ftpipe export.
    """
    import yaml

    registry = (
        RegistryConfig() if tracking_uri is None else RegistryConfig(tracking_uri=tracking_uri)
    )
    client = connect(registry)
    version = resolve_version(client, ref)
    source = version.source if version is not None else ref
    # A version's source is the logged model (models:/m-...), which never changes: cache on it.
    cache = Path(tempfile.gettempdir()) / "ftpipe-models" / re.sub(r"[^\w.-]", "_", source)
    if not (cache / "MLmodel").is_file():
        partial = cache.with_name(f"{cache.name}.{uuid.uuid4().hex}.partial")
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(partial))
        except MlflowException as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise FtpipeError(f"Cannot download {ref}: {reason(exc)}.") from None
        try:
            partial.rename(cache)  # atomic; a concurrent download of the same model may win
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
    flavor = yaml.safe_load((cache / "MLmodel").read_text())["flavors"].get("python_function", {})
    relative = flavor.get("artifacts", {}).get(EXPORT_ARTIFACT, {}).get("path")
    if relative is None or not (cache / relative).is_dir():
        raise FtpipeError(
            f"{ref} is not a model logged by ftpipe (its MLmodel has no `{EXPORT_ARTIFACT}` "
            "artifact). Register models with `ftpipe register`."
        )
    return cache / relative


def export_config(model_dir: str | Path) -> Config:
    """The resolved config an export was trained with (its config.yaml)."""
    import yaml

    from ftpipe.config.load import validate_config

    return validate_config(yaml.safe_load((Path(model_dir) / "config.yaml").read_text()))


def _label_names(model_dir: Path) -> tuple[str, ...]:
    from ftpipe.data.labels import LabelMap

    return LabelMap.load(model_dir / "label_map.json").names


def _requirements() -> list[str]:
    """Pinned from this environment: MLflow would otherwise load the model to infer them."""
    pins = []
    for name in ("ftpipe", *_REQUIREMENTS):
        try:
            # Without a local build tag (+cpu, +cu128): the serving side picks its own build.
            pins.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return pins
