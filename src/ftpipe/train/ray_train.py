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
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ftpipe.config import Config
from ftpipe.config.load import validate_config
from ftpipe.config.schema import config_hash
from ftpipe.train.metrics import resolve_metric
from ftpipe.train.outcome import Outcome, finish

log = logging.getLogger(__name__)


def ensure_ray(address: str | None) -> None:
    """Join the cluster at `address`, or start a quiet local Ray (once per process)."""
    import ray

    if ray.is_initialized():
        return
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        # Ray's own loggers in every process at ERROR: without the dashboard, its placement
        # group cleaner warns every few seconds that the state API is unavailable. Failures
        # still surface (as errors and as the exception trainer.fit() raises).
        logging_config=ray.LoggingConfig(log_level="ERROR"),
        log_to_driver=True,
        # Workers read data and models from this machine's paths; ship no code.
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0")}},
    )


def train_ray(config: Config, run_name: str | None = None) -> Outcome:
    """Fine-tune with `config.train.num_workers` Ray Train workers and export the best model.

    Args:
        config: The run's config; its prep output must exist.
        run_name: Name of the run under output_dir/ray; a new timestamped one by default,
            because Ray resumes a run whose name already exists in storage.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray(config.train.ray_address)
    use_gpu = config.train.use_gpu
    if use_gpu == "auto":
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    prep_dir = Path(config.data.output_dir).absolute()
    classification = (prep_dir / "label_map.json").exists()
    _, higher = resolve_metric(config.train.metric, classification)
    output_dir = Path(config.train.output_dir).absolute()
    name = run_name or f"train-{config_hash(config)[:8]}-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "prep_dir": str(prep_dir),
            "cwd": os.getcwd(),
        },
        scaling_config=ScalingConfig(
            num_workers=config.train.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": config.train.cpus_per_worker}
            | ({"GPU": 1} if use_gpu else {}),
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(output_dir / "ray"),
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=config.train.keep_checkpoints,
                checkpoint_score_attribute="score",
                checkpoint_score_order="max" if higher else "min",
            ),
        ),
    )
    result = trainer.fit()
    best_checkpoint, best_metrics = max(
        result.best_checkpoints, key=lambda pair: pair[1]["score"] * (1 if higher else -1)
    )
    with best_checkpoint.as_directory() as directory:
        return finish(output_dir, Path(directory), best_metrics, result.metrics)


def _worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: rebuild the config, then run the Ray-free core."""
    import ray.train
    from ray.train import Checkpoint

    from ftpipe.data.prepared import load_prepared
    from ftpipe.train.loop import RankContext, train

    os.chdir(loop_config["cwd"])  # relative paths in the config mean what they meant
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", force=True)
    # Ray Train logs every report and DeepSpeed its set-up at INFO: noise beside our progress.
    for noisy in ("ray", "DeepSpeed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
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
              Path(resume_from) if resume_from else None)  # fmt: skip
