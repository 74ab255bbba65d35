"""The `ftpipe` command line.

Every command takes `--config FILE` plus dotted overrides (`data.max_length=64`), so a shell
line, a KFP component and a Tune trial all describe a run the same way. Errors the user can fix
print as one paragraph and exit with status 2; there is no traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.text import Text

from ftpipe.cli import build, serve  # noqa: F401 - importing adds their commands to `app`
from ftpipe.cli.common import app, err

__all__ = ["app", "main"]
from ftpipe.errors import FtpipeError


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
        add_registered_commands(app)
        app()
    except FtpipeError as exc:
        err.print(Text("error: ", style="bold red") + Text(str(exc)))
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


# --- the pipeline: a stage on Ray, and the commands other packages register ---------------


@app.command(hidden=True)
def stage(spec: Annotated[Path, typer.Argument(help="The stage's stage.json.")]) -> None:
    """Run one pipeline stage from its spec (what a Ray job runs on the cluster)."""
    from ftpipe.stage import execute

    execute(spec)


COMMANDS_GROUP = "ftpipe.commands"
"""The entry-point group through which installed packages add commands to `ftpipe`."""


def add_registered_commands(target: typer.Typer) -> None:
    """Add the commands that installed packages register for `ftpipe` (at startup, by `main`).

    Each entry point of the `ftpipe.commands` group names a function `register(app)` that adds
    its commands to the app. This is how the pipeline's `run`, `compile`, `submit` and
    `schedule` (pipelines/cli.py, declared in pyproject.toml) join the command line while the
    library imports no kfp, pipelines or components. An entry point whose own module is not
    installed is skipped: the component images install ftpipe without pipelines/.

    Args:
        target: The app to add the commands to.

    Raises:
        ModuleNotFoundError: A registered module is there but imports something missing.
    """
    for entry in entry_points(group=COMMANDS_GROUP):
        try:
            register_commands = entry.load()
        except ModuleNotFoundError as exc:
            if exc.name and f"{entry.module}.".startswith(f"{exc.name}."):
                continue
            raise
        register_commands(target)
