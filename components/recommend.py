"""Recommend a strategy from the measured data (`ftpipe recommend`)."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output


def recommend(
    config: str,
    prepared: Input[Dataset],
    recommendation: Output[Artifact],
    report: Output[Markdown],
) -> str:
    """Measure the data and recommend a strategy; returns the strategy's name."""
    import json
    from pathlib import Path

    from ftpipe.reports import text_report
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
    Path(report.path).write_text(text_report("Recommendation", directory / "recommendation.txt"))
    return picked["strategy"]
