"""The `ftpipe` command line.

Every command takes `--config FILE` plus dotted overrides (`data.max_length=64`), so a shell
line, a KFP component and a Tune trial all describe a run the same way. Errors the user can fix
print as one paragraph and exit with status 2; there is no traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from ftpipe import __version__
from ftpipe.config import Config, config_hash, load_config
from ftpipe.errors import FtpipeError

app = typer.Typer(
    help="Fine-tune pretrained transformers on your labelled data, reproducibly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")

# Markup off: paths, labels and error text come from users and may hold "[...]".
out = Console(soft_wrap=True, markup=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The run's YAML config file.", show_default=False)
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="Dotted overrides, e.g. data.max_length=64 (values parse as YAML).",
        show_default=False,
    ),
]


def _print_version(value: bool) -> None:
    if value:
        out.print(f"ftpipe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Fine-tune pretrained transformers on your labelled data, reproducibly."""


@app.command()
def prep(config: ConfigOption, overrides: Overrides = None) -> None:
    """Load, validate, split and tokenize the data; write shards, stats and a fingerprint."""
    # Imported here so `ftpipe config ...` starts without loading tokenizers and pyarrow.
    from ftpipe.data import run_prep

    cfg = load_config(config, overrides or [])
    started = time.perf_counter()
    result = run_prep(cfg)
    _print_stats(result.stats)
    out.print(
        f"Wrote {result.output_dir} in {time.perf_counter() - started:.1f}s "
        f"(data fingerprint {result.fingerprint[:12]}, config hash {config_hash(cfg)[:12]})"
    )


@app.command()
def recommend(config: ConfigOption, overrides: Overrides = None) -> None:
    """Measure data size and similarity; recommend a strategy, lr ranges and a search space."""
    from ftpipe.strategies.recommend import run_recommend

    cfg = load_config(config, overrides or [])
    result = run_recommend(cfg)
    out.print(result.text(), end="")
    out.print(f"Wrote {Path(cfg.recommend.output_dir) / 'recommendation.json'}")


@app.command()
def train(
    config: ConfigOption,
    overrides: Overrides = None,
    no_ray: Annotated[
        bool,
        typer.Option(
            "--no-ray",
            help="Run the training core in this process instead of on Ray Train workers "
            "(for machines without Ray; use torchrun for several GPUs).",
        ),
    ] = False,
) -> None:
    """Fine-tune with the configured strategy on Ray Train + DeepSpeed; export the best model."""
    from ftpipe.registry.tracking import TrainingRun
    from ftpipe.strategies.recommend import resolve_auto

    cfg = resolve_auto(load_config(config, overrides or []))
    started = time.perf_counter()
    # One MLflow run per training: params, lineage, prep artifacts, every evaluation. A run
    # that raises ends FAILED, and `ftpipe register` refuses it.
    with TrainingRun(cfg) as run:
        if no_ray:
            from ftpipe.train.local import train_local

            outcome = train_local(cfg)
        else:
            from ftpipe.train.ray_train import train_ray

            outcome = train_ray(cfg)
        for entry in outcome.history:
            run.log_metrics(entry, int(entry["step"]))
    best = outcome.metrics
    scores = ", ".join(f"{k} {best[k]:.4f}" for k in ("accuracy", "macro_f1", "loss") if k in best)
    out.print(
        f"Trained {cfg.strategy.name} on {cfg.model.name} to step "
        f"{outcome.final_metrics.get('step')} in {time.perf_counter() - started:.0f}s. "
        f"Best: {scores} at step {best.get('step')}."
    )
    out.print(f"Exported {outcome.model_dir}")


@app.command()
def tune(
    config: ConfigOption,
    overrides: Overrides = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the interrupted sweep of this config."),
    ] = False,
) -> None:
    """Sweep learning rate, freeze depth and strategy with Ray Tune; one Ray Train run per trial."""
    from ftpipe.strategies.recommend import resolve_auto
    from ftpipe.tune.sweep import run_sweep

    cfg = resolve_auto(load_config(config, overrides or []))
    outcome = run_sweep(cfg, resume=resume)
    best = outcome.best_metrics[outcome.metric]
    out.print(f"Best {outcome.metric}: {best:.4f} (checkpoint {outcome.best_checkpoint})")
    out.print(f"Best config: {outcome.best_config}  (ftpipe train -c {outcome.best_config})")
    out.print(f"Trials: {outcome.results}; plots in {outcome.directory}")
    if outcome.final is not None:
        out.print(f"Exported {outcome.final.model_dir}")


@config_app.command("show")
def config_show(config: ConfigOption, overrides: Overrides = None) -> None:
    """Print the resolved config (file, defaults and overrides) as YAML, with its hash."""
    cfg = load_config(config, overrides or [])
    out.print(f"# config hash: {config_hash(cfg)}")
    out.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


@config_app.command("schema")
def config_schema() -> None:
    """Print the config's JSON schema: every key, its type, default and help."""
    out.print_json(json.dumps(Config.model_json_schema()))


def _print_stats(stats: dict) -> None:
    splits = stats["splits"]
    summary = Table(title=f"prep: {stats['model']}, max_length {stats['max_length']}")
    summary.add_column("split")
    for column in ("rows", "p95 tokens", "truncated", "unknown", "pieces/word"):
        summary.add_column(column, justify="right")
    for name, split in splits.items():
        summary.add_row(
            name,
            f"{split['rows']:,}",
            f"{split['token_length'].get('p95', 0):.0f}",
            f"{split['truncated_share']:.1%}",
            f"{split['unknown_token_rate']:.2%}",
            f"{split['pieces_per_word']:.2f}",
        )
    per_label = Table(title="rows per label")
    per_label.add_column("label")
    for name in splits:
        per_label.add_column(name, justify="right")
    for label in stats["labels"]:
        per_label.add_row(label, *(f"{s['rows_per_label'][label]:,}" for s in splits.values()))
    out.print(summary)
    out.print(per_label)
    for name, split in splits.items():
        if split["dropped"]:
            counts = ", ".join(f"{kind} {n:,}" for kind, n in split["dropped"].items())
            out.print(f"Dropped from {name}: {counts}")


def _configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("FTPIPE_LOG_LEVEL", "INFO"),
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
    )
    for noisy in ("datasets", "filelock", "fsspec", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_command(argv: list[str]) -> None:
    """Run one ftpipe command in this process (a pipeline stage); errors propagate."""
    if not logging.getLogger().handlers:
        _configure_logging()
    app(args=argv, prog_name="ftpipe", standalone_mode=False)


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one paragraph."""
    _configure_logging()
    try:
        app()
    except FtpipeError as exc:
        err.print(Text("error: ", style="bold red") + Text(str(exc)))
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


# --- evaluate, predict, register, promote: the registry end of the DAG ---------------------

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


def _training_run(cfg: Config, model: str | None, run_id: str | None) -> str | None:
    """The training run of the model: explicit, or recorded beside the default export."""
    if run_id is not None or model is not None:
        return run_id
    from ftpipe.registry.tracking import read_record

    record = read_record(cfg.train.output_dir)
    return record["run_id"] if record else None


@app.command()
def evaluate(
    config: ConfigOption, overrides: Overrides = None, model: ModelRef = None, run_id: RunId = None
) -> None:
    """Score a model on the held-out split: per-class metrics, calibration, confusion matrix."""
    from ftpipe.evaluate import evaluate_model, load_heldout
    from ftpipe.predict import Predictor, resolve_model
    from ftpipe.registry.models import export_config, tag_evaluation
    from ftpipe.registry.tracking import log_evaluation, run_status

    cfg = load_config(config, overrides or [])
    ref = model or str(Path(cfg.train.output_dir) / "model")
    directory = resolve_model(ref, cfg.registry.tracking_uri)
    heldout = load_heldout(cfg.data.output_dir)
    predictor = Predictor.load(directory, cfg.evaluate.batch_size)
    evaluation = evaluate_model(
        predictor, heldout, cfg.evaluate.output_dir, ref,
        cfg.evaluate.calibration_bins, cfg.evaluate.latency_rows,
    )  # fmt: skip
    run = _training_run(cfg, model, run_id)
    if run is not None and run_status(cfg.registry, run) != "FINISHED":
        if run_id is not None:
            raise FtpipeError(
                f"--run-id {run_id} is not a finished MLflow run in registry.tracking_uri="
                f"{cfg.registry.tracking_uri}. Pass the run that trained the model, or omit it."
            )
        run = None  # the recorded training run failed: log to a run of our own instead
    evaluation.run_id = log_evaluation(evaluation, cfg, run, export_config(directory))
    evaluation.save()
    version = tag_evaluation(cfg.registry, ref, evaluation)
    m = evaluation.metrics
    table = Table(title=f"evaluate: {ref} on {evaluation.rows:,} held-out rows")
    for column in ("class", "precision", "recall", "F1"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name in predictor.names:
        table.add_row(
            name, *(f"{m[f'{k}/{name}']:.4f}" for k in ("precision", "recall", "f1"))
        )  # fmt: skip
    out.print(table)
    latency = f", p95 latency {m['latency_p95_ms']:.1f} ms" if "latency_p95_ms" in m else ""
    out.print(
        f"accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, ECE {m['ece']:.4f}"
        f"{latency}, size {m['size_mb']:.1f} MB (held-out set {evaluation.fingerprint[:12]})"
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
    """Log the exported model to MLflow and register it as a new `challenger` version."""
    from ftpipe.evaluate import Evaluation
    from ftpipe.registry.models import register as register_model

    cfg = load_config(config, overrides or [])
    directory = model or Path(cfg.train.output_dir) / "model"
    summary = evaluation or Path(cfg.evaluate.output_dir) / "evaluation.json"
    found = Evaluation.load(summary) if summary.is_file() else None
    if found is not None and evaluation is None and not _same_dir(found.model, directory):
        found = None  # the last evaluation was of another model
    run = _training_run(cfg, str(model) if model else None, run_id)
    version = register_model(cfg, directory, run, found)
    if output is not None:
        record = {"name": version.name, "version": str(version.version), "run_id": version.run_id}
        output.write_text(json.dumps(record) + "\n")
    out.print(
        f"Registered {version.name} version {version.version} (alias challenger) from run "
        f"{version.run_id}."
    )
    if found is None:
        out.print(
            "No evaluation attached: run `ftpipe evaluate --model "
            f"models:/{version.name}/{version.version}` before `ftpipe promote`."
        )


def _same_dir(a: str, b: Path) -> bool:
    return Path(a).is_dir() and Path(a).resolve() == b.resolve()


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
    from ftpipe.registry.promote import promote as run_gate
    from ftpipe.registry.promote import write_decision

    cfg = load_config(config, overrides or [])
    result = run_gate(cfg, version, dry_run=dry_run)
    if output is not None:
        write_decision(result, output)
    decision = result.decision
    if decision is None:
        out.print(f"Version {result.version} of {result.name} already is champion; nothing to do.")
        return
    against = f"champion v{result.champion_before}" if result.champion_before else "no champion"
    table = Table(title=f"promotion gate: {result.name} v{result.version} against {against}")
    table.add_column("evidence")
    table.add_column("value", justify="right")
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
    """Labels and class probabilities for a file or for texts given on the command line."""
    from ftpipe.predict import Predictor, default_output, predict_file, resolve_model

    if (input_file is None) == (not text):
        raise FtpipeError("Give either --input FILE or --text TEXT (not both, not neither).")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    predictor = Predictor.load(resolve_model(model, uri), batch_size)
    if text:
        frame = predictor.frame(predictor.probabilities(text, text_pair or None))
        table = Table()
        for column in ("text", *frame.columns):
            table.add_column(column, justify="left" if column in ("text", "label") else "right")
        for given, row in zip(text, frame.itertuples(index=False), strict=True):
            table.add_row(given, row[0], *(f"{p:.4f}" for p in row[1:]))
        out.print(table)
        return
    if not input_file.is_file():
        raise FtpipeError(f"--input {input_file}: no such file.")
    target = output or default_output(input_file)
    started = time.perf_counter()
    rows = predict_file(predictor, input_file, target, text_column, pair_column)
    seconds = time.perf_counter() - started
    out.print(f"Wrote {rows:,} predictions to {target} in {seconds:.1f}s.")


# --- the pipeline: run locally, compile, submit and schedule on Kubeflow ------------------

Host = Annotated[
    str,
    typer.Option(
        "--host",
        help="The KFP API endpoint, e.g. https://kubeflow.example.com/pipeline. Auth comes "
        "from the environment: KFP_TOKEN, KFP_COOKIES or KF_PIPELINES_SA_TOKEN_PATH.",
        show_default=False,
    ),
]
RayAddress = Annotated[
    str,
    typer.Option(
        "--ray-address",
        help="The KubeRay head's Jobs API (http://HEAD-svc:8265) where tune and train run. "
        "Empty: they run Ray inside their own pods.",
    ),
]
MlflowUri = Annotated[
    str,
    typer.Option(
        "--mlflow-uri", help="MLflow tracking URI for the run. Empty: registry.tracking_uri."
    ),
]
Experiment = Annotated[str, typer.Option("--experiment", help="The KFP experiment to run in.")]


@app.command(hidden=True)
def stage(spec: Annotated[Path, typer.Argument(help="The stage's stage.json.")]) -> None:
    """Run one pipeline stage from its spec (what a Ray job runs on the cluster)."""
    from ftpipe.stage import execute

    execute(spec)


@app.command()
def run(config: ConfigOption, overrides: Overrides = None) -> None:
    """Run the whole pipeline on this machine: the KFP local runner, local Ray, MLflow."""
    from pipelines.local import run_local

    cfg = load_config(config, overrides or [])
    started = time.perf_counter()
    summary = run_local(cfg)
    minutes, seconds = divmod(time.perf_counter() - started, 60)
    out.print(f"Pipeline {cfg.pipeline.name} finished in {minutes:.0f}m{seconds:02.0f}s.")
    for line in summary.lines():
        out.print(line)


@app.command("compile")
def compile_command(
    config: ConfigOption,
    overrides: Overrides = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the pipeline IR YAML.")
    ] = Path("build/finetune.yaml"),
) -> None:
    """Compile the pipeline (images and pod settings from the config's `pipeline` section)."""
    from pipelines.finetune import compile_pipeline

    cfg = load_config(config, overrides or [])
    out.print(f"Wrote {compile_pipeline(cfg, output)}")


def _pipeline_arguments(cfg: Config, ray_address: str, mlflow_uri: str) -> dict[str, str]:
    return {
        "config": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        "ray_address": ray_address,
        "mlflow_uri": mlflow_uri,
    }


@app.command()
def submit(
    config: ConfigOption,
    host: Host,
    overrides: Overrides = None,
    ray_address: RayAddress = "",
    mlflow_uri: MlflowUri = "",
    experiment: Experiment = "ftpipe",
) -> None:
    """Compile the pipeline and start one run of it on a Kubeflow Pipelines endpoint."""
    import tempfile

    from pipelines.finetune import compile_pipeline
    from pipelines.remote import submit as submit_run

    cfg = load_config(config, overrides or [])
    with tempfile.TemporaryDirectory() as work:
        package = compile_pipeline(cfg, Path(work) / "pipeline.yaml")
        name = f"{cfg.pipeline.name}-{config_hash(cfg)[:8]}-{time.strftime('%Y%m%d-%H%M%S')}"
        started = submit_run(host, package, _pipeline_arguments(cfg, ray_address, mlflow_uri),
                             experiment, name)  # fmt: skip
    out.print(f"Started run {started.run_id}: {started.url}")


@app.command()
def schedule(
    config: ConfigOption,
    host: Host,
    cron: Annotated[
        str,
        typer.Option(
            "--cron", help='When to run, as a 5-field cron line, e.g. "0 3 * * *" (03:00).'
        ),
    ],
    overrides: Overrides = None,
    ray_address: RayAddress = "",
    mlflow_uri: MlflowUri = "",
    experiment: Experiment = "ftpipe",
) -> None:
    """Create a recurring run of the pipeline on a Kubeflow Pipelines endpoint."""
    import tempfile

    from pipelines.finetune import compile_pipeline
    from pipelines.remote import schedule as schedule_runs

    cfg = load_config(config, overrides or [])
    with tempfile.TemporaryDirectory() as work:
        package = compile_pipeline(cfg, Path(work) / "pipeline.yaml")
        created = schedule_runs(
            host,
            package,
            _pipeline_arguments(cfg, ray_address, mlflow_uri),
            cron,
            experiment,
            f"{cfg.pipeline.name}-{config_hash(cfg)[:8]}",
        )
    out.print(f"Scheduled {created.recurring_run_id} at cron {created.cron!r}: {created.url}")
