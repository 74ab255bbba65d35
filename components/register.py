"""Register the model, ask the promotion gate, and promote (`ftpipe register`, `promote`)."""

from kfp.dsl import HTML, Artifact, Input, Model, Output, OutputPath

from components import tracking_overrides


def register(
    config: Input[Artifact],
    mlflow_uri: str,
    run_id: str,
    model: Input[Model],
    evaluation: Input[Artifact],
    version: OutputPath(str),
    record: Output[Artifact],
    report: Output[HTML],
) -> str:
    """Register a `challenger` version, then ask the gate (a dry run that moves nothing).

    A "keep" is then recorded on the version (its description, tags and evidence file), as the
    promote step records a "promote"; neither moves the alias here.

    Returns the gate's answer, "promote" or "keep", on which the pipeline's promote step is
    conditional. (It is the component's single return value because KFP's local runner
    resolves conditions on a task's `Output` only.) `record` keeps registered.json and the
    gate's decision.json; `report` is the run report's register section.
    """
    import json
    from pathlib import Path

    from ftpipe.report import register_report
    from ftpipe.stage import Stage, run_stage

    uri = tracking_overrides(mlflow_uri)
    work = Path(record.path)
    work.mkdir(parents=True, exist_ok=True)
    registered, decision = work / "registered.json", work / "decision.json"
    summary = str(Path(evaluation.path) / "evaluation.json")
    arguments = {"model": model.path, "run_id": run_id, "evaluation": summary,
                 "output": str(registered)}  # fmt: skip
    run_stage(Stage("register", overrides=uri, arguments=arguments), config.path)
    number = json.loads(registered.read_text())["version"]
    Path(version).write_text(number)
    arguments = {"version": number, "dry_run": True, "output": str(decision)}
    run_stage(Stage("promote", overrides=uri, arguments=arguments), config.path)
    gate = json.loads(decision.read_text())["decision"]
    answer = "promote" if gate and gate["promote"] else "keep"
    if gate and answer == "keep":  # no promote step follows: record the "no" on the version
        arguments = {"version": number, "output": str(decision)}
        run_stage(Stage("promote", overrides=uri, arguments=arguments), config.path)
    report.uri += ".html"  # the file's type, for a browser and the KFP UI
    Path(report.path).write_text(register_report(registered, decision))
    return answer


def promote(config: Input[Artifact], mlflow_uri: str, version: str, record: Output[Artifact],
            report: Output[HTML]):  # fmt: skip
    """Move the `champion` alias to `version` (the gate decides again, under the lock).

    `record` keeps the gate's decision.json; `report` is the run report's gate section.
    """
    from pathlib import Path

    from ftpipe.report import stage_report
    from ftpipe.stage import Stage, run_stage

    decision = Path(record.path) / "decision.json"
    decision.parent.mkdir(parents=True, exist_ok=True)
    arguments = {"version": version, "output": str(decision)}
    overrides = tracking_overrides(mlflow_uri)
    run_stage(Stage("promote", overrides=overrides, arguments=arguments), config.path)
    report.uri += ".html"  # the file's type, for a browser and the KFP UI
    Path(report.path).write_text(stage_report("gate", decision))
