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
    from ftpipe.strategies.recommend import resolve_auto

    cfg = resolve_auto(load_config(config, overrides or []))
    started = time.perf_counter()
    if no_ray:
        from ftpipe.train.local import train_local

        outcome = train_local(cfg)
    else:
        from ftpipe.train.ray_train import train_ray

        outcome = train_ray(cfg)
    best = outcome.metrics
    scores = ", ".join(f"{k} {best[k]:.4f}" for k in ("accuracy", "macro_f1", "loss") if k in best)
    out.print(
        f"Trained {cfg.strategy.name} on {cfg.model.name} to step "
        f"{outcome.final_metrics.get('step')} in {time.perf_counter() - started:.0f}s. "
        f"Best: {scores} at step {best.get('step')}."
    )
    out.print(f"Exported {outcome.model_dir}")


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
