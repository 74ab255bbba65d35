"""Commands that build a model: prep, recommend, train, tune; and config inspection."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from ftpipe.cli.common import ConfigOption, Overrides, app, config_app, out
from ftpipe.config import Config, config_hash, load_config
from ftpipe.stages import load_checked_config


@app.command()
def prep(config: ConfigOption, overrides: Overrides = None) -> None:
    """Load, validate, split and tokenize the data; write shards, stats and a fingerprint."""
    # Imported here so `ftpipe config ...` starts without loading tokenizers and pyarrow.
    from ftpipe.stages import prep as stage

    cfg = load_checked_config(config, overrides or [])
    started = time.perf_counter()
    result = stage.run(cfg)
    _print_stats(result.stats)
    out.print(
        f"Wrote {result.output_dir} in {time.perf_counter() - started:.1f}s "
        f"(data fingerprint {result.fingerprint[:12]}, config hash {config_hash(cfg)[:12]})"
    )


@app.command()
def recommend(config: ConfigOption, overrides: Overrides = None) -> None:
    """Measure data size and similarity; recommend a strategy, lr ranges and a search space."""
    from ftpipe.stages import recommend as stage

    cfg = load_checked_config(config, overrides or [])
    result = stage.run(cfg)
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
    from ftpipe.stages import train as stage
    from ftpipe.tasks import get_task

    result = stage.run(load_checked_config(config, overrides or []), no_ray=no_ray)
    outcome, cfg = result.outcome, result.config
    best = outcome.metrics
    metrics = get_task(cfg.data.task).metrics  # the task's own: entity F1 for tagged words
    scores = ", ".join(f"{k} {best[k]:.4f}" for k in metrics if k in best)
    out.print(
        f"Trained {cfg.strategy.name} on {cfg.model.name} to step "
        f"{outcome.final_metrics.get('step')} in {result.seconds:.0f}s. "
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
    from ftpipe.stages import tune as stage

    outcome = stage.run(load_checked_config(config, overrides or []), resume=resume)
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
    from ftpipe.data.stats import counts_per_label

    title, counts = counts_per_label(stats)
    per_label = Table(title=title)
    per_label.add_column(title.split()[-1])
    for name in splits:
        per_label.add_column(name, justify="right")
    for label, per_split in counts:
        per_label.add_row(label, *(f"{n:,}" for n in per_split))
    out.print(summary)
    out.print(per_label)
    for name, split in splits.items():
        if split["dropped"]:
            counts = ", ".join(f"{kind} {n:,}" for kind, n in split["dropped"].items())
            out.print(f"Dropped from {name}: {counts}")
