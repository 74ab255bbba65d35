"""Score the trained model on the held-out split (`ftpipe evaluate`)."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import tracking_overrides


def evaluate(
    config: Input[Artifact],
    mlflow_uri: str,
    run_id: str,
    prepared: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> None:
    """The task's held-out metrics and latency, logged to the training run.

    Classifiers report per-class metrics and calibration; causal LMs their loss and, in the
    report, the prompt / reference / generation table.
    """
    import json
    from pathlib import Path

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
    lines = ["# Evaluation", "", "| metric | value |", "| --- | ---: |"]
    for key, value in sorted(found.metrics.items()):
        metrics.log_metric(key, float(value))
        lines.append(f"| {key} | {value:.4f} |")
    generations = Path(evaluation.path) / "generations.md"  # a causal LM's answers
    if generations.is_file():
        lines += ["", "## Generations", "", generations.read_text()]
    Path(report.path).write_text("\n".join(lines) + "\n")
    Path(metrics.path).write_text(json.dumps(found.metrics))  # what KFP's cache checks exists
