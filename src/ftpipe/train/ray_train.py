"""Run the training core on Ray Train: one TorchTrainer, N workers, restarts from checkpoints.

Ray brings the process group, worker placement (CPUs or one GPU each), checkpoint storage
and fault tolerance: when a worker dies, Ray restarts the worker group and `get_checkpoint()`
hands each new worker the last reported checkpoint, which the loop resumes at its step.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftpipe.artifacts import absolute
from ftpipe.config import Config
from ftpipe.config.load import validate_config
from ftpipe.config.schema import config_hash
from ftpipe.data.prepared import PrepDir
from ftpipe.errors import ConfigError, DataError, FtpipeError
from ftpipe.train.checkpoint import read_trainer_state
from ftpipe.train.deepspeed import batch_plan
from ftpipe.train.outcome import Outcome, finish
from ftpipe.train.ray_cluster import ensure_ray
from ftpipe.train.run_storage import RunStorage

if TYPE_CHECKING:  # the loop (torch, DeepSpeed) loads in the workers, not the driver
    from ftpipe.train.loop import MetricsSink

log = logging.getLogger(__name__)


def train_ray(
    config: Config, run_name: str | None = None, on_metrics: MetricsSink | None = None
) -> Outcome:
    """Fine-tune with `config.train.num_workers` Ray Train workers and export the best model.

    Checkpoints go to `train.storage` (or output_dir/ray). A run of the same config that a
    killed driver left unfinished there is resumed at its last checkpoint.

    Args:
        config: The run's config; its prep output must exist.
        run_name: Name of the run in storage; by default the config's unfinished run, or a new
            timestamped one (Ray resumes a run whose name already exists in storage).
        on_metrics: Receives the live metrics in the rank-0 worker (`MetricsSink`); it is
            pickled there, so it must hold what it needs to reach its store, not a connection.
    """
    output_dir = Path(config.train.output_dir).absolute()
    storage = RunStorage.open(config.train.storage or output_dir / "ray")
    prefix = f"train-{config_hash(config)[:8]}"
    name = run_name or storage.unfinished(prefix)
    if name:
        log.info("Resuming %s at its last checkpoint", storage.uri(name))
    name = name or f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    ensure_ray(config.train.ray_address)
    check_storage_reach(storage, "train.storage")
    result = build_trainer(config, name, storage, on_metrics=on_metrics).fit()
    best_checkpoint, best_metrics = best_of(result, higher_is_better(config))
    # The full evaluation history lives in the latest checkpoint, which Ray always keeps
    # (its metrics_dataframe holds only the reports whose checkpoints retention kept).
    with result.checkpoint.as_directory() as latest:
        history = read_trainer_state(Path(latest)).history
    with best_checkpoint.as_directory() as directory:
        outcome = finish(output_dir, Path(directory), best_metrics, result.metrics, history,
                         storage.reach(best_checkpoint.path))  # fmt: skip
    storage.mark_finished(name)
    return outcome


def check_storage_reach(storage: RunStorage, key: str) -> None:
    """Refuse checkpoints on this machine's disk when the Ray cluster has other nodes.

    A path the user named is taken as a shared file system; only the default, a directory
    under output_dir, is known to be one node's.

    Raises:
        ConfigError: If `key` is unset, its default is local, and the cluster has more nodes.
    """
    import ray

    nodes = sum(node["Alive"] for node in ray.nodes())
    if storage.is_object_store or nodes < 2:
        return
    raise ConfigError(
        f"{key} is not set, so checkpoints would go to {storage.location} on this machine, but "
        f"the Ray cluster has {nodes} nodes: a worker on another node could neither write "
        f"there nor resume from it. Set {key} to an object-storage URI (s3://BUCKET/PREFIX or "
        "gs://...; credentials from AWS_* or GOOGLE_APPLICATION_CREDENTIALS) or to a path every "
        "node mounts at the same place."
    )


def build_trainer(
    config: Config,
    name: str,
    storage: RunStorage,
    callbacks: Sequence[Any] = (),
    on_metrics: MetricsSink | None = None,
):
    """A TorchTrainer that runs the training core on `config.train.num_workers` workers.

    Args:
        config: The run's config; its prep output must exist.
        name: Run name under `storage` (an existing one is resumed by Ray).
        storage: Where Ray Train keeps checkpoints and results.
        callbacks: Ray Train callbacks (a Tune sweep passes its report callback).
        on_metrics: The live metrics' receiver, pickled into the workers (`train_ray`).
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ftpipe.train.ray_backend import LoopbackTorchConfig

    use_gpu = config.train.use_gpu
    if use_gpu == "auto":
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    preflight(config, use_gpu)
    workers = config.train.num_workers
    return TorchTrainer(
        _worker,
        # The process group meets on loopback when the Ray is local (its rendezvous store
        # would listen on every interface).
        torch_config=LoopbackTorchConfig(),
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "prep_dir": absolute(config.data.output_dir),  # each worker localizes a URI
            "cwd": os.getcwd(),
            "on_metrics": on_metrics,  # the loop calls it on rank 0 only
        },
        scaling_config=ScalingConfig(
            num_workers=workers if isinstance(workers, int) else tuple(workers),
            use_gpu=use_gpu,
            resources_per_worker={"CPU": config.train.cpus_per_worker}
            | ({"GPU": 1} if use_gpu else {}),
            placement_strategy=config.train.placement,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage.path,
            storage_filesystem=storage.filesystem,
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=config.train.keep_checkpoints,
                checkpoint_score_attribute="score",
                checkpoint_score_order="max" if higher_is_better(config) else "min",
            ),
            callbacks=list(callbacks),
            # Ray Train's own console lines (a "Checkpoint successfully created" per report)
            # at WARNING; they stay in its log files under the Ray session directory.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def preflight(config: Config, use_gpu: bool) -> None:
    """Check here what would otherwise fail in every worker, be retried, and end in a traceback.

    Raises:
        FtpipeError: On a missing prep, a batch that does not split, half precision without
            GPUs, or too little data for one global batch.
    """
    prep = PrepDir.open(config.data.output_dir)
    plan = batch_plan(config.train, config.train.worker_range[0])  # the most rows per worker
    if not use_gpu and config.train.precision in ("bf16", "fp16"):
        raise ConfigError(
            f"train.precision={config.train.precision} needs GPUs, and the workers get none "
            "(train.use_gpu, or a Ray cluster without GPUs). Use train.precision=auto."
        )
    rows = prep.rows["train"]
    if rows // plan.world_size < plan.per_rank:
        raise DataError(
            f"The training split has {rows} rows, fewer than one global batch "
            f"(train.batch_size={plan.global_batch}). Lower train.batch_size or add data."
        )


def higher_is_better(config: Config) -> bool:
    """Whether the run's early-stopping metric improves upwards (read from its prep)."""
    return PrepDir.open(config.data.output_dir).task.resolve_metric(config.train.metric)[1]


def best_of(result: Any, higher: bool) -> tuple[Any, dict[str, Any]]:
    """The best reported checkpoint that holds an export, and its metrics (by `score`)."""
    exported = [pair for pair in result.best_checkpoints if pair[1].get("exported")]
    return max(exported, key=lambda pair: pair[1]["score"] * (1 if higher else -1))


def _worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: rebuild the config, then run the Ray-free core."""
    import ray.train
    from ray.train import Checkpoint

    from ftpipe.data.prepared import load_prepared
    from ftpipe.train.loop import RankContext, train

    if Path(loop_config["cwd"]).is_dir():  # on the driver's machine (or a shared filesystem)
        os.chdir(loop_config["cwd"])  # relative paths in the config mean what they meant
    # Our progress at INFO, everyone else's at WARNING: Ray Train logs every report at INFO
    # (some of it from loggers named by file path, outside "ray"), DeepSpeed its set-up.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", force=True)
    logging.getLogger("ftpipe").setLevel(logging.INFO)
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)  # it sets its own level
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*")
    config = validate_config(loop_config["config"])
    context = ray.train.get_context()
    ctx = RankContext(context.get_world_rank(), context.get_world_size(), context.get_local_rank())

    def report(metrics: dict[str, Any], staging: Path | None) -> None:
        checkpoint = None if staging is None else Checkpoint.from_directory(str(staging))
        ray.train.report(metrics, checkpoint=checkpoint)

    checkpoint = ray.train.get_checkpoint()
    explicit = config.train.resume_from
    opened = checkpoint.as_directory() if checkpoint else nullcontext(explicit)
    with opened as resume_from:
        train(config, load_prepared(loop_config["prep_dir"]), ctx, report,
              Path(resume_from) if resume_from else None,
              on_metrics=loop_config.get("on_metrics"))  # fmt: skip


def submit_job(address: str, argv: list[str], working_dir: Path, name: str) -> None:
    """Run `ftpipe ARGV` as a Ray job on the cluster at `address`, streaming its log here.

    The Ray Jobs API runs the command on the cluster's head with `working_dir` uploaded as
    its working directory; Ray reads the auth token from RAY_AUTH_TOKEN when the cluster
    has token authentication on.

    Raises:
        FtpipeError: If the job server cannot be reached or the job does not succeed.
    """
    import asyncio
    import shlex

    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
        for attempt in range(30):
            try:
                job = client.submit_job(
                    entrypoint=shlex.join(["ftpipe", *argv]),
                    submission_id=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                    # No env_vars: the job's driver sets Hub access from the config's
                    # `model.offline`, and ensure_ray hands it on to its workers.
                    runtime_env={"working_dir": str(working_dir)},
                )
                break
            except RuntimeError as exc:  # a head that just started has no job agent yet
                if "No available agent" not in str(exc) or attempt == 29:
                    raise
                time.sleep(2)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise FtpipeError(
            f"Cannot submit to the Ray job server at {address}: {exc}. Pass the head's "
            "dashboard address (http://HEAD:8265) as the Ray address, with RAY_AUTH_TOKEN set "
            "when the cluster has token authentication on."
        ) from None

    async def stream() -> None:
        async for lines in client.tail_job_logs(job):
            print(lines, end="", flush=True)

    asyncio.run(stream())
    status = client.get_job_status(job)
    if status != JobStatus.SUCCEEDED:
        message = client.get_job_info(job).message
        raise FtpipeError(f"Ray job {job} at {address} ended {status}: {message}")
