"""Score the trained model on the held-out split (`ftpipe evaluate`)."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import tracking_overrides


def evaluate(
    config: Input[Artifact],
    mlflow_uri: str,
    run_id: str,
    prepared: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> None:
    """The task's held-out metrics and latency, logged to the training run.

    The report is the run report's evaluation section: classifiers' per-class metrics,
    confusion matrix, reliability diagram and most confident errors; causal LMs' loss and
    prompt / reference / generation table.
    """
    import json
    from pathlib import Path

    from ftpipe.report import stage_report
    from ftpipe.stage import Stage, run_stage
    from ftpipe.stages.evaluate import Evaluation

    run_stage(
        Stage(
            "evaluate",
            inputs={"data.output_dir": (prepared.path, prepared.uri)},
            outputs={"evaluate.output_dir": (evaluation.path, evaluation.uri)},
            overrides=tracking_overrides(mlflow_uri),
            arguments={"model": model.path, "run_id": run_id},
        ),
        config.path,
    )
    found = Evaluation.load(Path(evaluation.path) / "evaluation.json")
    for key, value in sorted(found.metrics.items()):
        metrics.log_metric(key, float(value))
    report.uri += ".html"  # the file's type, for a browser and the KFP UI
    Path(report.path).write_text(stage_report("evaluation", Path(evaluation.path)))
    Path(metrics.path).write_text(json.dumps(found.metrics))  # what KFP's cache checks exists
