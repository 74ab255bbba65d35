"""`ftpipe run`, `compile`, `submit` and `schedule`: the pipeline's commands.

They live beside the pipeline, not in the library, so that ftpipe never imports kfp. ftpipe's
command line adds them when it starts, through the `ftpipe.commands` entry point that
pyproject.toml declares for `register` (see `ftpipe.cli.add_registered_commands`). kfp and the
pipeline modules are imported only when one of these commands runs, so `ftpipe --help` and the
other commands stay as fast as before.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NamedTuple

import typer
import yaml

from ftpipe.cli.common import ConfigOption, Overrides, out
from ftpipe.config import Config, config_hash
from ftpipe.stages import load_checked_config

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


def register(app: typer.Typer) -> None:
    """Add the pipeline's commands to ftpipe's command line.

    This is the `ftpipe.commands` entry point (pyproject.toml) that `ftpipe.cli` calls at
    startup.

    Args:
        app: ftpipe's typer application.
    """
    app.command()(run)
    app.command("compile")(compile_command)
    app.command()(submit)
    app.command()(schedule)


def run(
    config: ConfigOption,
    overrides: Overrides = None,
    no_kfp: Annotated[
        bool,
        typer.Option(
            "--no-kfp",
            help="Run the stages one after another in this process instead of through the KFP "
            "local runner: no cache, a line per stage. What the RayJob on the cluster runs "
            "(with train.ray_address=auto and train.storage set).",
        ),
    ] = False,
    no_tune: Annotated[
        bool,
        typer.Option(
            "--no-tune",
            help="With --no-kfp: skip the sweep and train the config as it is (strategy.name="
            "auto takes the recommendation), e.g. a scheduled retrain of a settled recipe.",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also stream the run's log (the stages' and libraries' output, which goes to "
            "RUN/run.log under pipeline.local_root) to the terminal.",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline: through the KFP local runner, or stage by stage in this process.

    The terminal shows a table of the stages (state, duration, result); everything they print
    goes to the run's log, whose path the table names.
    """
    if no_tune and not no_kfp:
        raise typer.BadParameter(
            "the KFP pipeline always sweeps; add --no-kfp", param_hint="--no-tune"
        )
    cfg = load_checked_config(config, overrides or [])
    started = time.perf_counter()
    if no_kfp:
        from pipelines.sequential import run_sequential

        summary = run_sequential(cfg, tune=not no_tune, verbose=verbose)
    else:
        from pipelines.local import run_local

        summary = run_local(cfg, verbose=verbose)
    minutes, seconds = divmod(time.perf_counter() - started, 60)
    out.print(f"Pipeline {cfg.pipeline.name} finished in {minutes:.0f}m{seconds:02.0f}s.")
    for line in summary.lines():
        out.print(line)


def compile_command(
    config: ConfigOption,
    overrides: Overrides = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the pipeline IR YAML.")
    ] = Path("build/finetune.yaml"),
) -> None:
    """Compile the pipeline (images and pod settings from the config's `pipeline` section)."""
    from pipelines.finetune import compile_pipeline

    cfg = load_checked_config(config, overrides or [])
    out.print(f"Wrote {compile_pipeline(cfg, output)}")


class _Package(NamedTuple):
    """A compiled pipeline, ready to send to a KFP endpoint."""

    path: Path
    arguments: dict[str, str]
    name: str


@contextmanager
def _compiled(cfg: Config, ray_address: str, mlflow_uri: str) -> Iterator[_Package]:
    """The pipeline compiled into a temporary file, with the run's arguments and base name.

    Args:
        cfg: The run's config: it shapes the pods and travels as the `config` argument.
        ray_address: The `ray_address` argument (empty: Ray inside the stages' pods).
        mlflow_uri: The `mlflow_uri` argument (empty: the config's registry.tracking_uri).

    Yields:
        The package (deleted on exit), its arguments, and the name that runs and schedules
        are called by: the pipeline's name and the config hash.
    """
    from pipelines.finetune import compile_pipeline

    arguments = {
        "config": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
        "ray_address": ray_address,
        "mlflow_uri": mlflow_uri,
    }
    with tempfile.TemporaryDirectory() as work:
        package = compile_pipeline(cfg, Path(work) / "pipeline.yaml")
        yield _Package(package, arguments, f"{cfg.pipeline.name}-{config_hash(cfg)[:8]}")


def submit(
    config: ConfigOption,
    host: Host,
    overrides: Overrides = None,
    ray_address: RayAddress = "",
    mlflow_uri: MlflowUri = "",
    experiment: Experiment = "ftpipe",
) -> None:
    """Compile the pipeline and start one run of it on a Kubeflow Pipelines endpoint."""
    from pipelines.remote import submit as submit_run

    cfg = load_checked_config(config, overrides or [])
    with _compiled(cfg, ray_address, mlflow_uri) as package:
        run_name = f"{package.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        started = submit_run(host, package.path, package.arguments, experiment, run_name)
    out.print(f"Started run {started.run_id}: {started.url}")


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
    from pipelines.remote import schedule as schedule_runs

    cfg = load_checked_config(config, overrides or [])
    with _compiled(cfg, ray_address, mlflow_uri) as package:
        created = schedule_runs(
            host, package.path, package.arguments, cron, experiment, package.name
        )
    out.print(f"Scheduled {created.recurring_run_id} at cron {created.cron!r}: {created.url}")
