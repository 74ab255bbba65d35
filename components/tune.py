"""Sweep the search space with Ray Tune (`ftpipe tune`)."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from components import tracking_overrides


def tune(
    config: str,
    config_hash: str,
    ray_address: str,
    mlflow_uri: str,
    prepared: Input[Dataset],
    recommendation: Input[Artifact],
    sweep: Output[Artifact],
    best_config: Output[Artifact],
    results: Output[Dataset],
    report: Output[HTML],
    pipeline_run_id: str = "",
) -> str:
    """Run the sweep; the best trial's complete config is the `best_config` artifact (YAML).

    `config_hash` is not read: it is here so that KFP's cache keys on it. `pipeline_run_id`
    names the pipeline run in the trial runs' lineage (see `train`).
    """
    import shutil
    from pathlib import Path

    from ftpipe.report import stage_report
    from ftpipe.stage import Stage, run_stage

    run_stage(
        Stage(
            "tune",
            inputs={
                "data.output_dir": (prepared.path, prepared.uri),
                "recommend.output_dir": (recommendation.path, recommendation.uri),
            },
            outputs={"tune.output_dir": (sweep.path, sweep.uri)},
            overrides=["tune.final=none", *tracking_overrides(mlflow_uri)],
            pipeline_run_id=pipeline_run_id,
        ),
        config,
        ray_address,
    )
    directory = next(Path(sweep.path).glob("sweep-*"))
    shutil.copy(directory / "best.yaml", best_config.path)
    shutil.copy(directory / "results.csv", results.path)
    report.uri += ".html"  # the file's type, for a browser and the KFP UI
    Path(report.path).write_text(stage_report("sweep", directory))
    return directory.name
