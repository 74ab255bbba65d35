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

from ftpipe.cli import build, report, serve  # noqa: F401 - importing adds their commands to `app`
from ftpipe.cli.common import app, err

__all__ = ["app", "main"]
from ftpipe.errors import FtpipeError

QUIET = ("ray", "DeepSpeed", "deepspeed", "transformers", "mlflow", "torch", "peft",
         "accelerate", "datasets", "filelock", "fsspec", "urllib3", "httpx", "alembic",
         # Importing ray sets its top logger to INFO again: its packages keep their own level.
         "ray.train", "ray.tune", "ray.air", "ray.data", "ray.util", "ray._private",
         "ray.dashboard", "ray.autoscaler")  # fmt: skip
"""Libraries whose INFO lines are not ftpipe's progress: they log from WARNING on."""

QUIET_ENVIRON = {"MLFLOW_LOGGING_LEVEL": "WARNING", "TRANSFORMERS_VERBOSITY": "warning"}
"""The same for the libraries that set their own level when imported, in this process and in
the processes it starts (stages, Ray workers), where a level set here would not reach."""


class _Noise(logging.Filter):
    """Drops library warnings that tell a fine-tuning user nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to keep `record`."""
        message = record.getMessage()
        if "LOAD REPORT" in message:
            # Fine-tuning loads a base without its old head and adds a new one: UNEXPECTED and
            # MISSING head keys are the rule. A mismatch or a failed conversion raises right
            # after its report, which then explains the error.
            return "MISMATCH" in message or "CONVERSION" in message
        return not message.startswith("Setting accelerator to CPU")  # DeepSpeed on a CPU


def _configure_logging() -> None:
    """Log ftpipe's own progress at INFO (FTPIPE_LOG_LEVEL), the libraries' from WARNING on.

    With FTPIPE_LOG_LEVEL=DEBUG, the libraries log as they would on their own.
    """
    level = os.environ.get("FTPIPE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
    )
    if level == "DEBUG":
        return
    for name, value in QUIET_ENVIRON.items():
        os.environ.setdefault(name, value)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Logger filters survive the libraries' own set-up (they add handlers and set levels).
    for name in ("transformers.modeling_utils", "DeepSpeed"):
        logging.getLogger(name).addFilter(_Noise())


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
