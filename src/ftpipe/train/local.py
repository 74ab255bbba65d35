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

from ftpipe.config import Config, load_config
from ftpipe.data.prepared import load_prepared
from ftpipe.train.checkpoint import LocalCheckpoints
from ftpipe.train.loop import RankContext, train
from ftpipe.train.metrics import resolve_metric
from ftpipe.train.outcome import Outcome, finish


def train_local(config: Config, ctx: RankContext | None = None) -> Outcome:
    """Run the training core in this process and export the best model."""
    ctx = ctx or RankContext.from_env()
    data = load_prepared(config.data.output_dir)
    output_dir = Path(config.train.output_dir)
    _, higher = resolve_metric(config.train.metric, data.labels is not None)
    # One run directory per launch, so a later run never prunes an earlier run's checkpoints.
    root = output_dir / "checkpoints" / time.strftime("run-%Y%m%d-%H%M%S")
    checkpoints = LocalCheckpoints(root, config.train.keep_checkpoints, higher)
    best_metrics: dict = {}

    def report(metrics: dict, staging: Path | None) -> None:
        if staging is not None:
            checkpoints.add(staging, metrics)
            if checkpoints.best() == root / f"step-{metrics['step']:08d}":
                best_metrics.update(metrics)

    resume = Path(config.train.resume_from) if config.train.resume_from else None
    result = train(config, data, ctx, report, resume_from=resume)
    if ctx.rank != 0:
        return Outcome("", "", {}, result.metrics)
    return finish(output_dir, checkpoints.best(), best_metrics, result.metrics)


def main() -> None:
    """`python -m ftpipe.train.local --config c.yaml [key=value ...]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    outcome = train_local(load_config(args.config, args.overrides))
    if outcome.model_dir:
        print(f"Exported {outcome.model_dir}")


if __name__ == "__main__":
    main()
