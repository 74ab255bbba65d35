"""What every command shares: the app, the consoles and the config options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ftpipe import __version__

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
