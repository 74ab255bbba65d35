"""The fine-tuning DAG, from the raw data to a promoted model.

identify → prep → recommend → tune → train → evaluate → register → promote, the last only
when the promotion gate says so.

The pipeline's parameters are the config (YAML text), the Ray address and the MLflow URI.
Images and pod settings are fixed at compile time from the config's `pipeline` section, so
one compiled file is one deployment's pipeline: `make compile` writes it, nobody edits it.
"""

from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import HTML, Model

from components import component
from components.evaluate import evaluate
from components.prep import identify, prep
from components.recommend import recommend
from components.register import promote, register
from components.train import train
from components.tune import tune
from ftpipe.config import Config
from ftpipe.config.sections import StageConfig
from ftpipe.registry.lineage import KFP_RUN_VAR


class Outputs(NamedTuple):
    """What a run returns: the registered version, the gate's answer and evidence, the model."""

    version: str
    gate: str
    decision: HTML
    model: Model


RAY_CLIENT_LABEL = ("ftpipe.io/ray-client", "true")
"""Pod label of the stages that call the Ray Jobs API: infra/'s NetworkPolicy admits these."""

RUN_ID_ENV = (KFP_RUN_VAR, "metadata.labels['pipeline/runid']")
"""The run's id as environment (name, field path), for lineage: KFP labels each step's pod
with the id of its run, the UUID of the run's page in the KFP UI and of `ftpipe submit`."""


def _secrets(task: dsl.PipelineTask, config: Config, ray: bool) -> dsl.PipelineTask:
    """Mount the MLflow credentials (and for Ray clients the Ray token) as environment."""
    settings = config.pipeline
    if settings.mlflow_secret:
        names = {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"}
        kubernetes.use_secret_as_env(task, settings.mlflow_secret, names)
    if ray:
        kubernetes.add_pod_label(task, *RAY_CLIENT_LABEL)
        if settings.ray_token_secret:
            kubernetes.use_secret_as_env(task, settings.ray_token_secret,
                                         {"auth_token": "RAY_AUTH_TOKEN"})  # fmt: skip
    return task


def _configure(task: dsl.PipelineTask, stage: StageConfig, retry: bool) -> dsl.PipelineTask:
    """Apply one stage's pod settings: resources, placement, retries and caching."""
    if stage.cpu:
        task.set_cpu_request(stage.cpu).set_cpu_limit(stage.cpu)
    if stage.memory:
        task.set_memory_request(stage.memory).set_memory_limit(stage.memory)
    if stage.gpu:
        task.set_accelerator_type(stage.gpu_resource).set_accelerator_limit(stage.gpu)
    for key, value in stage.node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    for toleration in stage.tolerations:
        kubernetes.add_toleration(task, toleration.key, toleration.operator, toleration.value,
                                  toleration.effect)  # fmt: skip
    if stage.retries and retry:
        # KFP doubles the wait after each retry, up to an hour.
        task.set_retry(stage.retries, f"{stage.backoff_s:.0f}s", 2.0, "3600s")
    task.set_caching_options(stage.caching)
    return task


def build(config: Config, retry: bool = True, pipeline_run_id: str = ""):
    """The pipeline, with each stage's image and pod settings taken from `config.pipeline`.

    Args:
        config: The config whose `pipeline` section sets images and pod settings.
        retry: Whether failed stages retry (a cluster's pod can be preempted; a local run
            fails the same way twice, so `ftpipe run` turns retries off).
        pipeline_run_id: A KFP placeholder (`dsl.PIPELINE_JOB_*`) for the run's id in the
            tune and train steps' lineage tags, for the local runner, where pod settings mean
            nothing. Empty on a cluster: there every step that logs to MLflow reads the run's
            id from its pod's label (`RUN_ID_ENV`), because an input new in every run could
            cost the cached steps their cache hits.
    """
    settings = config.pipeline

    def configure(task: dsl.PipelineTask, stage: StageConfig) -> dsl.PipelineTask:
        _configure(task, stage, retry)
        if stage is stages.prep or stage is stages.recommend:
            return task  # neither talks to MLflow or Ray
        kubernetes.use_field_path_as_env(task, *RUN_ID_ENV)
        return _secrets(task, config, ray=stage is stages.tune or stage is stages.train)

    stages = settings.stages

    def make(func, stage: StageConfig):
        return component(func, stage.image or settings.image)

    identify_op = make(identify, stages.prep)
    prep_op, recommend_op = make(prep, stages.prep), make(recommend, stages.recommend)
    tune_op, train_op = make(tune, stages.tune), make(train, stages.train)
    evaluate_op = make(evaluate, stages.evaluate)
    register_op, promote_op = make(register, stages.registry), make(promote, stages.registry)

    @dsl.pipeline(name=settings.name, description="Fine-tune, evaluate, register and promote.")
    def finetune(config: str, ray_address: str = "", mlflow_uri: str = "") -> Outputs:
        # Uncached on purpose: it reads the inputs' bytes, and its outputs key every cache hit
        # after it, so changed data reruns everything and unchanged data reruns nothing.
        ids = identify_op(config=config).set_caching_options(False)
        ids.set_display_name("identify inputs")
        prepared = configure(
            prep_op(config=config, data_fingerprint=ids.outputs["data_fingerprint"]),
            stages.prep,
        )
        rec = configure(
            recommend_op(config=config, prepared=prepared.outputs["prepared"]), stages.recommend
        )
        sweep = configure(
            tune_op(
                config=config,
                config_hash=ids.outputs["config_hash"],
                ray_address=ray_address,
                mlflow_uri=mlflow_uri,
                prepared=prepared.outputs["prepared"],
                recommendation=rec.outputs["recommendation"],
                pipeline_run_id=pipeline_run_id,
            ),
            stages.tune,
        )
        trained = configure(
            train_op(
                config=sweep.outputs["best_config"],
                ray_address=ray_address,
                mlflow_uri=mlflow_uri,
                prepared=prepared.outputs["prepared"],
                recommendation=rec.outputs["recommendation"],
                pipeline_run_id=pipeline_run_id,
            ),
            stages.train,
        )
        scored = configure(
            evaluate_op(
                config=sweep.outputs["best_config"],
                mlflow_uri=mlflow_uri,
                run_id=trained.outputs["run_id"],
                prepared=prepared.outputs["prepared"],
                model=trained.outputs["model"],
            ),
            stages.evaluate,
        )
        registered = configure(
            register_op(
                config=sweep.outputs["best_config"],
                mlflow_uri=mlflow_uri,
                run_id=trained.outputs["run_id"],
                model=trained.outputs["model"],
                evaluation=scored.outputs["evaluation"],
            ),
            stages.registry,
        )
        # A registry write must never be replayed from a cache: it would skip the write.
        registered.set_caching_options(False)
        with dsl.If(registered.outputs["Output"] == "promote", name="gate-passed"):
            promoted = promote_op(
                config=sweep.outputs["best_config"], mlflow_uri=mlflow_uri,
                version=registered.outputs["version"],
            )  # fmt: skip
            configure(promoted, stages.registry).set_caching_options(False)
        return Outputs(
            version=registered.outputs["version"], gate=registered.outputs["Output"],
            decision=registered.outputs["report"], model=trained.outputs["model"],
        )  # fmt: skip

    return finetune


def compile_pipeline(config: Config, path: Path) -> Path:
    """Compile the pipeline to KFP's IR YAML at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build(config), str(path))
    return path
