"""Commands at the registry end of the DAG: evaluate, register, promote, predict."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ftpipe.cli.common import ConfigOption, Overrides, app, out
from ftpipe.stages import load_checked_config

ModelRef = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="An export directory, or a registry URI such as models:/NAME@champion or "
        "models:/NAME/3. Default: train.output_dir/model.",
        show_default=False,
    ),
]
RunId = Annotated[
    str | None,
    typer.Option(
        "--run-id",
        help="The MLflow run that trained the model. Default: the one `ftpipe train` recorded "
        "in train.output_dir/tracking.json, when --model is not given.",
        show_default=False,
    ),
]


@app.command()
def evaluate(
    config: ConfigOption, overrides: Overrides = None, model: ModelRef = None, run_id: RunId = None
) -> None:
    """Score a model on the held-out split: per-class metrics, calibration, confusion matrix.

    Causal LMs: loss, perplexity, and exact match and ROUGE-L of generated answers.
    """
    from ftpipe.stages import evaluate as stage

    result = stage.run(load_checked_config(config, overrides or []), model, run_id)
    evaluation, ref, version = result.evaluation, result.ref, result.version
    m = evaluation.metrics
    table = Table(
        title=f"evaluate: {ref} on {evaluation.rows:,} rows of the {evaluation.split} split"
    )
    table.add_column(result.report_unit)
    for column in result.report_columns:
        table.add_column(column, justify="right")
    for row in result.report_rows:
        table.add_row(*row)
    out.print(table)
    latency = f", p95 latency {m['latency_p95_ms']:.1f} ms" if "latency_p95_ms" in m else ""
    out.print(
        f"{result.summary}{latency}, size {m['size_mb']:.1f} MB "
        f"(held-out set {evaluation.fingerprint[:12]})"
    )
    if version is not None:
        out.print(f"Attached to version {version.version} of {version.name}.")
    out.print(f"Wrote {evaluation.output_dir}; logged to MLflow run {evaluation.run_id}")


@app.command()
def register(
    config: ConfigOption,
    overrides: Overrides = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="The export directory. Default: train.output_dir/model.",
            show_default=False,
        ),
    ] = None,
    run_id: RunId = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", help="Also write the new version as JSON here.", show_default=False
        ),
    ] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option(
            "--evaluation",
            help="The model's evaluation.json, attached as the gate's evidence. Default: "
            "evaluate.output_dir/evaluation.json when it evaluated this model.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Log the exported model to MLflow and register it as the `challenger` version.

    The same export registered again gives its earlier version back.
    """
    from ftpipe.stages import register as stage

    result = stage.run(
        load_checked_config(config, overrides or []), model, run_id, evaluation, output
    )
    version = result.version
    how = "Already registered as" if result.reused else "Registered"
    out.print(
        f"{how} {version.name} version {version.version} (alias challenger) from run "
        f"{version.run_id}."
    )
    if result.orphans:
        out.print(f"Marked debris of killed registrations: {', '.join(result.orphans)}.")
    if result.evaluation is None:
        out.print(
            "No evaluation attached: run `ftpipe evaluate --model "
            f"models:/{version.name}/{version.version}` before `ftpipe promote`."
        )


@app.command()
def promote(
    config: ConfigOption,
    overrides: Overrides = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            help="The version to gate. Default: the `challenger` alias.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show the gate's decision; record and move nothing."),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Also write the outcome as JSON here.", show_default=False),
    ] = None,
) -> None:
    """Make the challenger `champion` only if the promotion gate shows it is better."""
    from ftpipe.stages import promote as stage

    cfg = load_checked_config(config, overrides or [])
    result = stage.run(cfg, version, dry_run=dry_run, output=output)
    decision = result.decision
    if decision is None:
        out.print(f"Version {result.version} of {result.name} already is champion; nothing to do.")
        return
    against = f"champion v{result.champion_before}" if result.champion_before else "no champion"
    table = Table(title=f"promotion gate: {result.name} v{result.version} against {against}")
    table.add_column("evidence")
    table.add_column("value", justify="right")
    optimistic = " (optimistic: it also selected the model)" if decision.optimistic else ""
    table.add_row("held-out split", decision.split + optimistic)
    table.add_row(f"{decision.metric}, challenger", f"{decision.challenger:.4f}")
    if decision.champion is not None:
        table.add_row(f"{decision.metric}, champion", f"{decision.champion:.4f}")
        level = f"{cfg.promote.confidence:.0%}"
        table.add_row(
            f"difference, {level} CI", f"[{decision.ci_low:+.4f}, {decision.ci_high:+.4f}]"
        )
        table.add_row("required: lower bound above", f"{cfg.promote.margin:+.4f}")
        for name, delta in sorted(decision.class_f1_deltas.items()):
            table.add_row(f"F1 change, {name}", f"{delta:+.4f}")
    else:
        table.add_row("CI of the metric", f"[{decision.ci_low:.4f}, {decision.ci_high:.4f}]")
        table.add_row("required: lower bound at least", f"{cfg.promote.floor:.4f}")
    for check, passed in decision.checks.items():
        table.add_row(f"check: {check}", "pass" if passed else "FAIL")
    out.print(table)
    if dry_run:
        verdict = "would be promoted" if decision.promote else "would not be promoted"
        out.print(f"DRY RUN: version {result.version} of {result.name} {verdict}.")
    elif result.changed:
        out.print(f"PROMOTED: version {result.version} of {result.name} is now champion.")
    else:
        kept = f"version {result.champion_before}" if result.champion_before else "no version"
        out.print(f"NOT PROMOTED: {kept} stays champion.")
    out.print(f"Reason: {decision.reason}")


Prompts = Annotated[
    list[str] | None,
    typer.Option(
        "--prompt",
        "-p",
        help="A prompt for a causal LM to answer (repeatable); one prompt streams its answer "
        "as it is generated.",
        show_default=False,
    ),
]
GenerationConfig = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="A run config whose `generate` section sets how a causal LM generates. Default: "
        "the settings the model was trained with.",
        show_default=False,
    ),
]


@app.command()
def predict(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="An export directory or a registry URI (models:/NAME@champion).",
            show_default=False,
        ),
    ],
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="A CSV, TSV, JSONL, Parquet or TXT (one text per line) file, "
            "optionally gzipped, of any size.",
            show_default=False,
        ),
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option("--text", "-t", help="A text to classify (repeatable).", show_default=False),
    ] = None,
    text_pair: Annotated[
        list[str] | None,
        typer.Option("--text-pair", help="Second texts, for pair models.", show_default=False),
    ] = None,
    prompt: Prompts = None,
    config: GenerationConfig = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write (.csv, .jsonl or .parquet). Default: the "
            "input's name with .predictions before the extension.",
            show_default=False,
        ),
    ] = None,
    text_column: Annotated[str, typer.Option(help="The input's text column.")] = "text",
    pair_column: Annotated[
        str | None, typer.Option(help="The input's second-text column.", show_default=False)
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per forward pass.")] = 64,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI for models:/ references. Default: MLFLOW_TRACKING_URI, "
            "else sqlite:///mlflow.db.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Predictions for a file or for texts given on the command line.

    Classifiers give labels and class probabilities, taggers entities, and causal LMs the
    generated answer to each prompt (`--prompt`, or a file's text or `messages` column).
    """
    from ftpipe.stages import predict as stage

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    generation = load_checked_config(config, []).generate if config is not None else None
    texts = [*(text or ()), *(prompt or ())]
    streamed = prompt is not None and len(texts) == 1 and input_file is None
    result = stage.run(model, input_file, texts, text_pair or (), output, text_column,
                       pair_column, batch_size, uri, generation, streamed)  # fmt: skip
    if streamed and result.frame is not None and "generated" in result.frame:
        return  # the answer was printed as it was generated
    if result.frame is not None:
        frame = result.frame
        table = Table()
        for column in ("text", *frame.columns):
            table.add_column(column, justify="left" if column in ("text", "label") else "right")
        for given, row in zip(texts, frame.itertuples(index=False), strict=True):
            table.add_row(given, row[0], *(f"{p:.4f}" for p in row[1:]))
        out.print(table)
        return
    out.print(f"Wrote {result.rows:,} predictions to {result.output} in {result.seconds:.1f}s.")
