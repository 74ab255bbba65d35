"""Register the model, ask the promotion gate, and promote (`ftpipe register`, `promote`)."""

from kfp.dsl import Artifact, Input, Markdown, Model, Output, OutputPath

from components import tracking_overrides


def register(
    config: Input[Artifact],
    mlflow_uri: str,
    run_id: str,
    model: Input[Model],
    evaluation: Input[Artifact],
    version: OutputPath(str),
    report: Output[Markdown],
) -> str:
    """Register a `challenger` version, then ask the gate (a dry run that moves nothing).

    Returns the gate's answer, "promote" or "keep", on which the pipeline's promote step is
    conditional. (It is the component's single return value because KFP's local runner
    resolves conditions on a task's `Output` only.)
    """
    import json
    import tempfile
    from pathlib import Path

    from ftpipe.reports import decision_report
    from ftpipe.stage import Stage, run_stage

    uri = tracking_overrides(mlflow_uri)
    with tempfile.TemporaryDirectory() as work:
        registered, decision = Path(work) / "registered.json", Path(work) / "decision.json"
        summary = str(Path(evaluation.path) / "evaluation.json")
        arguments = {"model": model.path, "run_id": run_id, "evaluation": summary,
                     "output": str(registered)}  # fmt: skip
        run_stage(Stage("register", overrides=uri, arguments=arguments), config.path)
        number = json.loads(registered.read_text())["version"]
        Path(version).write_text(number)
        arguments = {"version": number, "dry_run": True, "output": str(decision)}
        run_stage(Stage("promote", overrides=uri, arguments=arguments), config.path)
        gate = json.loads(decision.read_text())["decision"]
        Path(report.path).write_text(decision_report(decision))
    return "promote" if gate and gate["promote"] else "keep"


def promote(config: Input[Artifact], mlflow_uri: str, version: str, report: Output[Markdown]):
    """Move the `champion` alias to `version` (the gate decides again, under the lock)."""
    import tempfile
    from pathlib import Path

    from ftpipe.reports import decision_report
    from ftpipe.stage import Stage, run_stage

    with tempfile.TemporaryDirectory() as work:
        decision = Path(work) / "decision.json"
        arguments = {"version": version, "output": str(decision)}
        overrides = tracking_overrides(mlflow_uri)
        run_stage(Stage("promote", overrides=overrides, arguments=arguments), config.path)
        Path(report.path).write_text(decision_report(decision))
