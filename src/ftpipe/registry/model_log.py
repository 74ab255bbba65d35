"""Logging an export directory as an MLflow pyfunc model, and reading an export's config.

* Logged from its directory: the files are copied into the model's artifacts and never
  loaded into memory. MLflow would load a model to check its input example and to infer its
  pip requirements; the signature is given, the requirements are pinned from what is
  installed, and the input-example check is switched off (`_Flavor`).
* LoRA/IA3: the adapter alone is logged (with the tokenizer, labels and manifest), and the
  manifest names the base model and revision it loads onto, even when the export also holds
  merged weights.

MLflow logs models only through its module-level API, so `log_model` runs inside
`scoped_mlflow`: the caller's MLflow state is the same afterwards.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema

from ftpipe.registry.client import scoped_mlflow
from ftpipe.registry.pyfunc import EXPORT_ARTIFACT
from ftpipe.train.export import Export

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
        """Save with `mlflow.pyfunc.save_model`, minus `validate_serving_input`."""
        kwargs.pop("validate_serving_input", None)
        return mlflow.pyfunc.save_model(**kwargs)


def log_model(client: MlflowClient, run_id: str, model_dir: str | Path, name: str = "model") -> Any:
    """Log an export directory as a pyfunc model of run `run_id`.

    Args:
        client: A client of the store the run is in (from `connect`).
        run_id: The run the model belongs to.
        model_dir: The export directory.
        name: The logged model's name.

    Returns:
        MLflow's ModelInfo of the logged model.
    """
    export = Export.open(model_dir)
    model_dir, manifest, task = export.directory, export.manifest, export.task
    pairs = getattr(export.config.data, task.second_text_key) is not None
    columns = task.signature(export.labels.names if export.labels else (), pairs)
    inputs, outputs = ([ColSpec(kind, name) for name, kind in c.items()] for c in columns)
    example = {"text": ["an example input"]} | ({"text_pair": ["a second text"]} if pairs else {})
    # The logged model belongs to its run's experiment; MLflow takes it from the active one.
    experiment = client.get_run(run_id).info.experiment_id
    with scoped_mlflow(client.tracking_uri, experiment), _staged(model_dir, manifest) as staged:
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
            metadata={"ftpipe_kind": Export(staged).kind},
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
        Export(staged).manifest_path.write_text(
            json.dumps(manifest | {"kind": "peft", "merged_on_export": True}, indent=2) + "\n"
        )
        yield staged


def _merged(filename: str) -> bool:
    """Whether a top-level export file holds merged weights (left out of an adapter's model)."""
    return filename in _MERGED_FILES or (
        filename.startswith("model-") and filename.endswith(".safetensors")
    )


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
