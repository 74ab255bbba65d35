"""Train without Ray: one process, or one per GPU under torchrun / the deepspeed launcher.

This is how the training core runs where Ray is not installed (a lent GPU machine) and how
its overhead is measured. Checkpoints go to output_dir/checkpoints, best and latest kept.

    torchrun --nproc-per-node 8 -m ftpipe.train.local --config c.yaml
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from ftpipe.config import Config, load_config
from ftpipe.data.prepared import load_prepared
from ftpipe.hub import set_hub_access
from ftpipe.strategies.recommend import resolve_auto
from ftpipe.train.checkpoint import LocalCheckpoints
from ftpipe.train.loop import MetricsSink, RankContext, init_distributed, train
from ftpipe.train.outcome import Outcome, finish


def train_local(
    config: Config, ctx: RankContext | None = None, on_metrics: MetricsSink | None = None
) -> Outcome:
    """Run the training core in this process and export the best model.

    Args:
        config: The run's config; its prep output must exist.
        ctx: Who this process is (from torchrun's environment by default).
        on_metrics: Receives the live training and evaluation metrics (`MetricsSink`).
    """
    ctx = ctx or RankContext.from_env()
    init_distributed(ctx)
    data = load_prepared(config.data.output_dir)
    output_dir = Path(config.train.output_dir)
    _, higher = data.task.resolve_metric(config.train.metric)
    # One run directory per launch, so a later run never prunes an earlier run's checkpoints.
    # Rank 0 names it: clocks on other ranks may already show the next second.
    name = [time.strftime("run-%Y%m%d-%H%M%S")]
    torch.distributed.broadcast_object_list(name, src=0)
    root = output_dir / "checkpoints" / name[0]
    checkpoints = LocalCheckpoints(root, config.train.keep_checkpoints, higher)
    best_metrics: dict = {}

    def report(metrics: dict, staging: Path | None) -> None:
        if staging is not None:
            checkpoints.add(staging, metrics)
            torch.distributed.barrier()  # every rank's shard is in before any pruning
            if ctx.rank == 0:
                checkpoints.prune()
            if checkpoints.best() == root / f"step-{metrics['step']:08d}":
                best_metrics.update(metrics)

    resume = Path(config.train.resume_from) if config.train.resume_from else None
    result = train(config, data, ctx, report, resume_from=resume, on_metrics=on_metrics)
    if ctx.rank != 0:
        return Outcome("", "", {}, result.metrics)
    best = checkpoints.best()
    return finish(output_dir, best, best_metrics, result.metrics, result.state.history)


def main() -> None:
    """`python -m ftpipe.train.local --config c.yaml [key=value ...]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = resolve_auto(load_config(args.config, args.overrides))
    set_hub_access(config.model.offline)  # before the model loads, in every torchrun rank
    outcome = train_local(config)
    if outcome.model_dir:
        print(f"Exported {outcome.model_dir}")


if __name__ == "__main__":
    main()
