"""`ftpipe report RUN_DIR`: write a pipeline run's report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ftpipe.cli.common import app, out


@app.command()
def report(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A pipeline run's directory: pipeline.local_root/<run name>, as `ftpipe run` "
            "prints it (KFP's layout or --no-kfp's)."
        ),
    ],
) -> None:
    """Write RUN_DIR/report.html: data, recommendation, sweep, training, evaluation, gate, lineage.

    One self-contained page (inline images and styles) from the files the stages wrote; a
    stage that has not run yet is left out.
    """
    from ftpipe.report import write_run_report

    out.print(f"Wrote {write_run_report(run_dir)}")
