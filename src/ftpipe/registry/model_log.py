"""Logging an export directory as an MLflow pyfunc model, and reading an export's config.

* Logged from its directory: the files are copied into the model's artifacts and never
  loaded into memory. MLflow would load a model to check its input example and to infer its
  pip requirements; the signature is given, the requirements are pinned from what is
  installed, and the input-example check is switched off (`_Flavor`).
* LoRA/IA3: the adapter alone is logged (with the tokenizer, labels and manifest), and the
  manifest names the base model and revision it loads onto, even when the export also holds
  merged weights.

* A manifest of every logged file (`ftpipe-manifest.json`: relative path to sha256) is written
  into the model before upload, and its own sha256 is tagged on the logged model
  (`ftpipe.manifest_sha256`) before the model turns READY. MLflow records no per-file digests;
  `ftpipe.registry.download` verifies a cached copy against this manifest, and the manifest
  against the tag, which lives in the store and not in the cache.

MLflow logs models only through its module-level API, so `log_model` runs inside
`scoped_mlflow`: the caller's MLflow state is the same afterwards.
"""

from __future__ import annotations

import functools
import hashlib
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
from mlflow.types.schema import Array, Object, Property

from ftpipe.registry.client import retry, scoped_mlflow
from ftpipe.registry.lock import process_gone, process_identity
from ftpipe.registry.pyfunc import EXPORT_ARTIFACT
from ftpipe.train.export import Export

_REQUIREMENTS = ("torch", "transformers", "peft", "tokenizers", "safetensors", "pandas", "pyyaml")
_MERGED_FILES = ("model.safetensors", "model.safetensors.index.json", "config.json")


MANIFEST = "ftpipe-manifest.json"
"""File in a logged model's artifacts: every other file's sha256."""
MANIFEST_TAG = "ftpipe.manifest_sha256"
"""Logged-model tag: the sha256 of the model's MANIFEST file."""
EXPORT_TAG = "ftpipe.export_sha256"
"""Tag of a logged model, its version and a registration run: the export's content hash."""
KIND_TAG = "ftpipe.model_kind"
"""Tag of a logged model and its version: the logged export's kind (`peft` for an adapter)."""
_CREATOR = "ftpipe.creator."
"""Prefix of a logged model's tags naming the process that logs it (`process_identity`)."""


def file_digests(directory: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """Relative path (POSIX, sorted) to the sha256 of each file under `directory`.

    Args:
        directory: The directory to walk; symbolic links are followed.
        exclude: Relative paths to leave out.

    Returns:
        The digests, in path order.
    """
    root = Path(directory)
    digests = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative not in exclude:
            digests[relative] = _sha256(path)
    return digests


def export_sha256(directory: str | Path) -> str:
    """The content hash of an export directory: its sorted relative paths and file digests.

    The same files under the same names give the same hash wherever the directory is.
    """
    digest = hashlib.sha256()
    for relative, file_digest in file_digests(directory).items():
        digest.update(f"{relative}\0{file_digest}\n".encode())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(functools.partial(handle.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Flavor:
    """pyfunc's save_model without the input-example check, and with a manifest.

    `Model.log` reads `validate_serving_input` and passes every keyword on to the flavor's
    save_model; pyfunc's rejects unknown keywords, so this drops it. After saving, it writes
    MANIFEST and tags the (still PENDING) logged model with the manifest's sha256, so a READY
    model always carries the tag.
    """

    __name__ = "mlflow.pyfunc"

    def __init__(self, client: MlflowClient):
        self.client = client

    def save_model(self, **kwargs: Any) -> Any:
        """Save with `mlflow.pyfunc.save_model`, minus `validate_serving_input`."""
        kwargs.pop("validate_serving_input", None)
        saved = mlflow.pyfunc.save_model(**kwargs)
        path = Path(kwargs["path"])
        for pycache in list(path.rglob("__pycache__")):  # MLflow drops these before uploading
            shutil.rmtree(pycache, ignore_errors=True)
        manifest = json.dumps({"files": file_digests(path, (MANIFEST,))}, indent=1) + "\n"
        (path / MANIFEST).write_text(manifest)
        self.client.set_logged_model_tags(
            kwargs["mlflow_model"].model_id,
            {MANIFEST_TAG: hashlib.sha256(manifest.encode()).hexdigest()},
        )
        return saved


def log_model(
    client: MlflowClient,
    run_id: str,
    model_dir: str | Path,
    name: str = "model",
    digest: str | None = None,
) -> Any:
    """Log an export directory as a pyfunc model of run `run_id`.

    Args:
        client: A client of the store the run is in (from `connect`).
        run_id: The run the model belongs to.
        model_dir: The export directory.
        name: The logged model's name.
        digest: The export's `export_sha256`, computed when None. The logged model is tagged
            with it and with this process (`process_identity`) when created (PENDING), so a
            registration killed meanwhile can be recognised (`fail_orphan_models`).

    Returns:
        MLflow's ModelInfo of the logged model.
    """
    export = Export.open(model_dir)
    tags = {EXPORT_TAG: digest or export_sha256(model_dir)}
    tags |= {_CREATOR + key: value for key, value in process_identity().items()}
    model_dir, manifest = export.directory, export.manifest
    task = export.task.serving("register")
    columns = task.signature(export.labels.names if export.labels else (), export.config.data)
    inputs, outputs = ([ColSpec(_mlflow_type(kind), name) for name, kind in c.items()]
                       for c in columns)  # fmt: skip
    example = {name: EXAMPLES[name] for name in columns[0]}
    # The logged model belongs to its run's experiment; MLflow takes it from the active one.
    experiment = client.get_run(run_id).info.experiment_id
    with scoped_mlflow(client.tracking_uri, experiment), _staged(model_dir, manifest) as staged:
        return Model.log(
            artifact_path=None,
            name=name,
            flavor=_Flavor(client),
            flavor_name="pyfunc.ModelFromCode",
            tags=tags | {KIND_TAG: Export(staged).kind},
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


EXAMPLES = {
    "text": ["an example input"],
    "text_pair": ["a second text"],
    "messages": [[{"role": "user", "content": "an example question"}]],
}
"""The logged model's input example, per input column a task's signature may name."""


def _mlflow_type(kind: str | list | dict) -> Any:
    """A task's column type as MLflow's: a name, `[item]` for a list, `{name: type}` an object."""
    if isinstance(kind, list):
        return Array(_mlflow_type(kind[0]))
    if isinstance(kind, dict):
        return Object([Property(name, _mlflow_type(value)) for name, value in kind.items()])
    return kind


def reusable_model(client: MlflowClient, run_id: str, digest: str) -> str | None:
    """The id of a READY logged model of the export `digest` in run `run_id`, if any.

    A registration killed after logging leaves one; it carries its manifest tag (set before
    the model turned READY), so it is complete.
    """
    experiment = client.get_run(run_id).info.experiment_id
    for model in _models_of(client, [experiment], digest):
        ready = _status(model) == "READY" and MANIFEST_TAG in model.tags
        if model.source_run_id == run_id and ready:
            return model.model_id
    return None


def fail_orphan_models(
    client: MlflowClient, digest: str, experiments: list[str]
) -> tuple[list[str], set[str]]:
    """Finalize as FAILED the logged models of an export left PENDING by a process now gone.

    Args:
        client: A client of the store.
        digest: The export's `export_sha256`.
        experiments: Where its logged models may be.

    Returns:
        One line per model failed here, and the ids of all its models that are not READY.
    """
    marked, unusable = [], set()
    for model in _models_of(client, experiments, digest):
        status = _status(model)
        creator = {
            k.removeprefix(_CREATOR): v for k, v in model.tags.items() if k.startswith(_CREATOR)
        }
        if status == "PENDING" and process_gone(creator):
            retry(lambda m=model: client.finalize_logged_model(m.model_id, "FAILED"), "fail it")
            status = "FAILED"
            marked.append(f"logged model {model.model_id}: left PENDING, now FAILED")
        if status != "READY":
            unusable.add(model.model_id)
    return marked, unusable


def _models_of(client: MlflowClient, experiments: list[str], digest: str) -> list[Any]:
    return retry(
        lambda: client.search_logged_models(experiments, f"tags.`{EXPORT_TAG}` = '{digest}'"),
        "find the export's logged models",
    )


def _status(model: Any) -> str:
    return str(getattr(model.status, "value", model.status))


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
