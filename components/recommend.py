"""Recommend a strategy from the measured data (`ftpipe recommend`)."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Output


def recommend(
    config: str,
    prepared: Input[Dataset],
    recommendation: Output[Artifact],
    report: Output[HTML],
) -> str:
    """Measure the data and recommend a strategy; returns the strategy's name."""
    import json
    from pathlib import Path

    from ftpipe.report import stage_report
    from ftpipe.stage import Stage, run_stage

    run_stage(
        Stage(
            "recommend",
            inputs={"data.output_dir": (prepared.path, prepared.uri)},
            outputs={"recommend.output_dir": (recommendation.path, recommendation.uri)},
        ),
        config,
    )
    directory = Path(recommendation.path)
    picked = json.loads((directory / "recommendation.json").read_text())
    recommendation.metadata.update({"strategy": picked["strategy"]})
    report.uri += ".html"  # the file's type, for a browser and the KFP UI
    Path(report.path).write_text(stage_report("recommendation", directory))
    return picked["strategy"]
