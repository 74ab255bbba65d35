"""Fine-tune the best configuration on Ray Train + DeepSpeed (`ftpipe train`)."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components import tracking_overrides


def train(
    config: Input[Artifact],
    ray_address: str,
    mlflow_uri: str,
    prepared: Input[Dataset],
    recommendation: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    pipeline_run_id: str = "",
) -> NamedTuple("Trained", [("run_id", str)]):
    """Train with `config` (the sweep's best); the export is the `model` artifact.

    `pipeline_run_id` names the pipeline run in the training run's lineage tags, which the
    registered version inherits; empty, the stage takes it from its pod (KFP_RUN_ID).
    """
    import json
    from collections import namedtuple
    from pathlib import Path

    from ftpipe.stage import Stage, run_stage
    from ftpipe.train.export import Export
    from ftpipe.train.outcome import read_record

    # The train stage exports to train.output_dir/model: make that the artifact's path.
    parent = (str(Path(model.path).parent), model.uri.rsplit("/", 1)[0])
    run_stage(
        Stage(
            "train",
            inputs={
                "data.output_dir": (prepared.path, prepared.uri),
                "recommend.output_dir": (recommendation.path, recommendation.uri),
            },
            outputs={"train.output_dir": parent},
            overrides=tracking_overrides(mlflow_uri),
            pipeline_run_id=pipeline_run_id,
        ),
        config.path,
        ray_address,
    )
    export = Export.open(model.path)
    manifest, best = export.manifest, export.metrics
    scores = {k: float(best[k]) for k in ("accuracy", "macro_f1", "loss", "perplexity", "step")
              if k in best}  # fmt: skip
    for key, value in scores.items():
        metrics.log_metric(key, value)
    # The UI reads the metadata; the file is what KFP's cache checks still exists.
    Path(metrics.path).write_text(json.dumps(scores))
    record = read_record(Path(model.path).parent)
    # The KFP run's model names its MLflow run, as the run and the version name the KFP run.
    model.metadata.update({"strategy": manifest["strategy"], "base_model": manifest["base_model"],
                           "mlflow_run_id": record["run_id"]})  # fmt: skip
    return namedtuple("Trained", ["run_id"])(record["run_id"])
