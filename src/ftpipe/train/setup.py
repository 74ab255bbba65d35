"""Everything the training loop needs before its first step: the plan, the engine, the resume.

`plan_run` does the batch and step arithmetic and checks what can be checked without a model;
`build_engine` loads the model, applies the strategy and wraps it in DeepSpeed; `resume_state`
restores a checkpoint. The loop itself (train/loop.py) then reads top to bottom.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftpipe.config.rules import precision_problem
from ftpipe.config.schema import Config
from ftpipe.data.features import TOKENS, cached_features
from ftpipe.data.prepared import PreparedData, Split
from ftpipe.errors import ConfigError, DataError, FtpipeError
from ftpipe.strategies import Prepared, prepare
from ftpipe.strategies.layers import true_numel
from ftpipe.strategies.param_groups import param_groups
from ftpipe.strategies.schedules import build_scheduler
from ftpipe.train.batching import BatchSource, epoch_padding
from ftpipe.train.checkpoint import TrainerState, load_checkpoint
from ftpipe.train.deepspeed import BatchPlan, batch_plan, deepspeed_config, resolve_precision
from ftpipe.train.distributed import RankContext
from ftpipe.train.head_fit import fits_cached_head
from ftpipe.train.model import load_base_model
from ftpipe.train.packing import Packer, Padding
from ftpipe.train.reduction import reduces_in_place

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """What a run will do: its splits, selection metric, batches and steps.

    Attributes:
        train_split: The rows trained on (eval rows too with `train.train_on_eval`).
        eval_split: The rows evaluated on.
        metric: The checkpoint-selection and early-stopping metric.
        higher_is_better: Its direction.
        batch: Micro-batch, accumulation and world size.
        steps_per_epoch: Optimizer steps per epoch.
        total_steps: Optimizer steps of the whole run.
        precision: fp32, bf16 or fp16, as resolved on this hardware.
        ds_config: The DeepSpeed config.
        head_fit: Feature extraction on the feature cache: the run's one step fits the head
            to convergence on the whole cache (train/head_fit.py).
        padding: With `data.packing`, the share of computed tokens that are padding.
    """

    train_split: Split
    eval_split: Split
    metric: str
    higher_is_better: bool
    batch: BatchPlan
    steps_per_epoch: int
    total_steps: int
    precision: str
    ds_config: dict[str, Any]
    head_fit: bool
    padding: Padding | None = None

    def evaluates_after(self, done: int, every: int | None) -> bool:
        """Whether the run evaluates (and checkpoints) after `done` steps."""
        at_epoch_end = done % self.steps_per_epoch == 0
        return at_epoch_end or done == self.total_steps or bool(every and done % every == 0)


def plan_run(config: Config, data: PreparedData, ctx: RankContext) -> RunPlan:
    """The run's arithmetic, checked before any model is loaded.

    Raises:
        ConfigError: If the strategy cannot train in the resolved precision.
        DataError: If the training split is smaller than one global batch.
    """
    train_split, eval_split = data.splits["train"], data.splits["eval"]
    if config.train.train_on_eval:
        train_split = train_split.concat(eval_split)
    metric, higher = data.task.resolve_metric(config.train.metric)
    plan = batch_plan(config.train, ctx.world_size)
    steps_per_epoch = (len(train_split) // ctx.world_size) // plan.per_rank
    if steps_per_epoch == 0:
        raise DataError(
            f"The training split has {len(train_split)} rows, fewer than one global batch "
            f"(train.batch_size={plan.global_batch}). Lower train.batch_size or add data."
        )
    total_steps = steps_per_epoch * config.train.epochs
    if config.train.max_steps:
        total_steps = min(total_steps, config.train.max_steps)
    head_fit = fits_cached_head(config)
    if head_fit:  # one full-batch fit to convergence replaces the epochs of steps
        steps_per_epoch = total_steps = 1
    precision = resolve_precision(config.train, ctx.device)
    problem = precision_problem(config.strategy.name, precision)
    if problem is not None:
        raise ConfigError(problem)
    ds_config = deepspeed_config(config.train, plan, precision)
    padding = None
    if config.data.packing:
        padding = epoch_padding(train_split.lengths, config.seed, ctx.world_size, plan.per_rank,
                                plan.micro, config.train.group_by_length,
                                config.data.max_length)  # fmt: skip
    return RunPlan(train_split, eval_split, metric, higher, plan, steps_per_epoch, total_steps,
                   precision, ds_config, head_fit, padding)  # fmt: skip


@dataclass
class Engine:
    """The model being trained and what drives it.

    Attributes:
        engine: The DeepSpeed engine around the (strategy-wrapped) model.
        prepared: What the strategy made of the model.
        scheduler: The learning-rate schedule.
        train_source: Training batches.
        eval_source: Evaluation batches.
        trainable_parameters: Parameters the optimizer updates.
        zero3: Under ZeRO-3, the registration that must live as long as the run.
        averages_gradients: Whether the loop averages gradients across ranks itself, in
            place, before each optimizer step (DeepSpeed then does not).
    """

    engine: Any
    prepared: Prepared
    scheduler: Any
    train_source: BatchSource
    eval_source: BatchSource
    trainable_parameters: int
    zero3: Any
    averages_gradients: bool = False


def build_engine(config: Config, data: PreparedData, ctx: RankContext, plan: RunPlan) -> Engine:
    """Load the base model, apply the strategy and wrap it all in a DeepSpeed engine."""
    import deepspeed  # in the worker, never the driver: it initialises accelerator state

    # One seed on every rank, so new heads start identical.
    torch.manual_seed(config.seed)
    model, zero3 = load_base_model(config, data.labels, plan.ds_config)
    prepared = prepare(model, config)
    if prepared.gradient_checkpointing:
        prepared.model.gradient_checkpointing_enable({"use_reentrant": False})
    pad_id = model.config.pad_token_id
    packer = None
    if config.data.packing:  # training only: the evaluator scores rows, so eval stays unpacked
        packer = Packer.for_model(prepared.model, config.strategy.name, config.data.max_length,
                                  pad_id)  # fmt: skip
    train_source = BatchSource(plan.train_split, pad_id, data.task, packer=packer)
    eval_source = BatchSource(plan.eval_split, pad_id, data.task)
    if plan.head_fit:
        splits = {"train": plan.train_split, "eval": plan.eval_split}
        train_source, eval_source = _cached_sources(config, data, splits, prepared.model, ctx)

    groups = param_groups(prepared, config.train)
    trainable = sum(true_numel(p) for g in groups for p in g["params"] if p.requires_grad)
    optimizer = torch.optim.AdamW(groups, fused=torch.cuda.is_available())
    scheduler = build_scheduler(optimizer, config.train, plan.total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=prepared.model, optimizer=optimizer, lr_scheduler=scheduler, config=plan.ds_config
    )
    # At ZeRO-0 DeepSpeed flattens every gradient into one buffer, all-reduces it and copies
    # it back at each step. A lone rank has nothing to reduce; in fp32 the loop averages the
    # gradients where they lie instead, as DDP does (ftpipe.train.reduction).
    averages = ctx.world_size > 1 and reduces_in_place(config.train.zero_stage, plan.precision)
    if averages or (ctx.world_size == 1 and config.train.zero_stage == 0):
        engine.enable_backward_allreduce = False
    return Engine(engine, prepared, scheduler, train_source, eval_source, trainable, zero3,
                  averages)  # fmt: skip


def resume_state(
    engine: Any, resume_from: Path | None, config: Config, ctx: RankContext, total_steps: int
) -> TrainerState:
    """The state to start from: a checkpoint's (weights, optimizer, RNG, step), or a fresh one.

    Raises:
        FtpipeError: If the checkpoint already reached the run's last step.
    """
    if resume_from is None:
        # Dropout differs per rank (as it would on separate GPUs) but repeats run to run.
        torch.manual_seed(config.seed * 1000 + ctx.rank)
        return TrainerState()
    state = load_checkpoint(engine, Path(resume_from), ctx.rank)
    log.info("Resumed from %s at step %d", resume_from, state.step)
    if state.step >= total_steps:
        raise FtpipeError(
            f"The checkpoint {resume_from} is at step {state.step}, and this run has "
            f"{total_steps} steps: nothing is left to train. Raise train.epochs or "
            "train.max_steps, or resume from an earlier checkpoint."
        )
    return state


def _cached_sources(config, data, splits, model, ctx) -> tuple[BatchSource, BatchSource]:
    """Batch sources over the feature cache: rank 0 computes it once, the others then read."""
    pad_id = model.config.pad_token_id

    def load():
        cache = config.train.cache_dir
        backbone, pooling = model.backbone, model.pooling
        return cached_features(cache, data.fingerprint, backbone, splits, pooling, 64, pad_id)

    if ctx.rank == 0:
        features = load()
    torch.distributed.barrier()
    if ctx.rank != 0:
        features = load()
    per_token = model.pooling == TOKENS
    return tuple(
        BatchSource(splits[name], pad_id, data.task, torch.from_numpy(features[name]), per_token)
        for name in ("train", "eval")
    )
