"""The training core: plain torch + DeepSpeed, no Ray.

`train()` runs unchanged in a single process, under torchrun or the deepspeed launcher, and
inside a Ray Train worker (train/ray_train.py). The caller says who this process is (a
`RankContext`) and how to hand over metrics and checkpoints (a `report` callable); everything
else, from model loading to the export of the best model, happens here, top to bottom.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftpipe.config.schema import Config
from ftpipe.data.features import cached_features
from ftpipe.data.prepared import PreparedData
from ftpipe.errors import ConfigError, DataError, FtpipeError
from ftpipe.strategies import prepare
from ftpipe.strategies.feature_extraction import PooledClassifier
from ftpipe.strategies.layers import true_numel
from ftpipe.strategies.param_groups import param_groups
from ftpipe.strategies.schedules import build_scheduler
from ftpipe.train.batching import BatchSource, eval_shard, rank_order
from ftpipe.train.checkpoint import TrainerState, load_checkpoint, save_checkpoint
from ftpipe.train.deepspeed import batch_plan, deepspeed_config, resolve_precision
from ftpipe.train.export import write_export
from ftpipe.train.metrics import classification_metrics, lm_metrics, resolve_metric
from ftpipe.train.model import load_base_model, zero3_paused

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any], Path | None], None]
"""Called by every rank at every evaluation with the metrics and the checkpoint staging
directory (this rank's files); the directory may be deleted once the call returns."""


@dataclass(frozen=True)
class RankContext:
    """Who this process is in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> RankContext:
        """Read RANK / WORLD_SIZE / LOCAL_RANK, as torchrun and the deepspeed launcher set."""
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )

    @property
    def device(self) -> torch.device:
        """This rank's GPU where there is one, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


@dataclass
class TrainResult:
    """What a finished run hands back (identical on every rank).

    Attributes:
        metrics: The last evaluation's metrics.
        state: Final step, best metric and the evaluation history.
        start_step: The step this process started at (above 0 after a resume).
        train_seconds: Time spent in training steps (no evaluation or checkpoints).
        samples_per_second: Training rows per second over all ranks.
        tokens_per_second: Non-padding training tokens per second over all ranks.
        trainable_parameters: Parameters the optimizer updates.
    """

    metrics: dict[str, Any]
    state: TrainerState
    start_step: int
    train_seconds: float
    samples_per_second: float
    tokens_per_second: float
    trainable_parameters: int


def train(
    config: Config,
    data: PreparedData,
    ctx: RankContext,
    report: Report,
    resume_from: Path | None = None,
) -> TrainResult:
    """Fine-tune `config.model` on prepared data with `config.strategy`; see module docstring.

    Raises:
        ConfigError: On settings that cannot work with this data or hardware.
        DataError: If the training data is too small for one global batch.
    """
    import deepspeed  # in the worker, never the driver: it initialises accelerator state
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # load/save bars at every export drown the progress log

    init_distributed(ctx)
    classification = data.labels is not None
    train_split, eval_split = data.splits["train"], data.splits["eval"]
    if config.train.train_on_eval:
        train_split = train_split.concat(eval_split)
    metric, higher_is_better = resolve_metric(config.train.metric, classification)

    # --- Batch arithmetic and the DeepSpeed config ---------------------------------------
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
    precision = resolve_precision(config.train, ctx.device)
    if config.strategy.name == "gradual-unfreezing" and precision != "fp32":
        raise ConfigError(
            f"strategy.name=gradual-unfreezing needs fp32, but this run trains in {precision}: "
            "DeepSpeed's bf16/fp16 optimizers keep only the parameters trainable at the start, "
            "so blocks unfrozen later would never update. Set train.precision=fp32."
        )
    ds_config = deepspeed_config(config.train, plan, precision)

    # --- Model and strategy. One seed on every rank, so new heads start identical --------
    torch.manual_seed(config.seed)
    model, zero3 = load_base_model(config, data.labels, ds_config)
    prepared = prepare(model, config)
    if prepared.gradient_checkpointing:
        prepared.model.gradient_checkpointing_enable({"use_reentrant": False})
    pad_id = model.config.pad_token_id
    train_source = BatchSource(train_split, pad_id, causal_lm=not classification)
    eval_source = BatchSource(eval_split, pad_id, causal_lm=not classification)
    if isinstance(prepared.model, PooledClassifier) and config.train.feature_cache:
        splits = {"train": train_split, "eval": eval_split}
        train_source, eval_source = _cached_sources(config, data, splits, prepared.model, ctx)

    groups = param_groups(prepared, config.train)
    trainable = sum(true_numel(p) for g in groups for p in g["params"] if p.requires_grad)
    optimizer = torch.optim.AdamW(groups, fused=torch.cuda.is_available())
    scheduler = build_scheduler(optimizer, config.train, total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=prepared.model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    if ctx.world_size == 1 and config.train.zero_stage == 0:
        # Nothing to reduce, but DeepSpeed would still flatten every gradient into one buffer,
        # "all-reduce" it and copy it back at each step: 8% of a CPU step for MiniLM.
        engine.enable_backward_allreduce = False

    # --- Resume: weights, optimizer, schedule, RNG and data position ----------------------
    state = TrainerState()
    if resume_from is not None:
        state = load_checkpoint(engine, Path(resume_from), ctx.rank)
        log.info("Resumed from %s at step %d", resume_from, state.step)
    # Dropout differs per rank (as it would on separate GPUs) but repeats run to run.
    if resume_from is None:
        torch.manual_seed(config.seed * 1000 + ctx.rank)
    start_step = state.step
    if start_step >= total_steps:
        raise FtpipeError(
            f"The checkpoint {resume_from} is at step {start_step}, and this run has "
            f"{total_steps} steps: nothing is left to train. Raise train.epochs or "
            "train.max_steps, or resume from an earlier checkpoint."
        )
    exported = False  # every run exports at least once, also a resumed one that never improves

    # --- The loop: one iteration per optimizer step ---------------------------------------
    if ctx.rank == 0:
        log.info(
            "Training %d steps (%d per epoch x %d epochs%s): global batch %d = %d micro x %d "
            "accumulation x %d workers, %s, ZeRO-%d",
            total_steps, steps_per_epoch, config.train.epochs,
            ", capped by train.max_steps" if config.train.max_steps else "",
            plan.global_batch, plan.micro, plan.accumulation, ctx.world_size, precision,
            config.train.zero_stage,
        )  # fmt: skip
    train_seconds, rows_seen, tokens_seen = 0.0, 0, 0
    run_started = time.perf_counter()  # the ETA counts evaluations and checkpoints too
    window_loss, window_steps = 0.0, 0
    order, order_epoch = np.empty(0, dtype=np.int64), -1
    metrics: dict[str, Any] = {}
    for step in range(start_step, total_steps):
        epoch, index = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order = rank_order(train_split.lengths, config.seed, epoch, ctx.rank,
                               ctx.world_size, plan.per_rank)  # fmt: skip
            order_epoch = epoch
            if prepared.unfreeze is not None:
                prepared.unfreeze(epoch)
        rows = order[index * plan.per_rank : (index + 1) * plan.per_rank]

        started = time.perf_counter()
        engine.train()
        for micro_rows in rows.reshape(plan.accumulation, plan.micro):
            batch = train_source.batch(micro_rows, engine.device)
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()  # DeepSpeed applies the optimizer on the accumulation boundary
            window_loss += loss.item() / plan.accumulation
            if "attention_mask" in batch:
                tokens_seen += int(batch["attention_mask"].sum()) * ctx.world_size
        train_seconds += time.perf_counter() - started
        rows_seen += plan.global_batch
        window_steps += 1

        done = step + 1
        if done % config.train.log_every_steps == 0 or done == total_steps:
            if ctx.rank == 0:
                steps_per_s = (done - start_step) / (time.perf_counter() - run_started)
                tokens = "" if classification else f"  {tokens_seen / train_seconds:,.0f} tokens/s"
                eta = int((total_steps - done) / max(steps_per_s, 1e-9))
                log.info(
                    "step %d/%d  epoch %.2f  loss %.4f  lr %.2e  %.2f steps/s  %.1f samples/s%s"
                    "  ETA %d:%02d:%02d",
                    done, total_steps, done / steps_per_epoch, window_loss / window_steps,
                    max(scheduler.get_last_lr()), steps_per_s, rows_seen / train_seconds, tokens,
                    eta // 3600, eta % 3600 // 60, eta % 60,
                )  # fmt: skip
            window_loss, window_steps = 0.0, 0

        at_epoch_end = done % steps_per_epoch == 0
        every = config.train.eval_every_steps
        if not (at_epoch_end or done == total_steps or (every and done % every == 0)):
            continue

        # --- Evaluate, decide, checkpoint (every rank: the saves are collective) ----------
        metrics = evaluate(engine, eval_source, ctx, plan.micro, data)
        metrics |= {
            "step": done,
            "epoch": done / steps_per_epoch,
            "start_step": start_step,
            "train_samples_per_second": rows_seen / max(train_seconds, 1e-9),
        }
        value = metrics[metric]
        improved = state.best is None or (
            value > state.best if higher_is_better else value < state.best
        )
        if improved:
            state.best, state.best_step, state.bad_evals = value, done, 0
        else:
            state.bad_evals += 1
        # Checkpoints are ranked by `score`: the metric, except that one which only ties the
        # best ranks below it, so the top-ranked checkpoint is always the exported best.
        tie_break = 1e-9 if higher_is_better else -1e-9
        pick = min if higher_is_better else max
        metrics["score"] = value if improved else pick(value, state.best) - tie_break
        state.step = done
        state.history.append(metrics)
        stop = config.train.patience is not None and state.bad_evals >= config.train.patience
        if ctx.rank == 0:
            note = "best" if improved else f"{state.bad_evals} without improvement"
            log.info("eval @ step %d: %s  (%s)", done, _format(metrics), note)
        with tempfile.TemporaryDirectory(prefix="ftpipe-ckpt-") as staging:
            save_checkpoint(engine, Path(staging), state, ctx.rank)
            metrics["exported"] = improved or not exported
            if metrics["exported"]:  # the best model so far: the checkpoint to keep for good
                export(engine, prepared, config, data, metrics, Path(staging) / "model", ctx)
                exported = True
            reported = {**metrics, "best": state.best, "best_step": state.best_step,
                        "bad_evals": state.bad_evals}  # fmt: skip
            report(reported, Path(staging))
        if stop:
            if ctx.rank == 0:
                log.info(
                    "Early stopping: %s did not improve for %d evaluations (best %.4f at step %d)",
                    metric, state.bad_evals, state.best, state.best_step,
                )  # fmt: skip
            break

    del zero3  # the ZeRO-3 registration lives exactly as long as the run
    return TrainResult(
        metrics=metrics,
        state=state,
        start_step=start_step,
        train_seconds=train_seconds,
        samples_per_second=rows_seen / max(train_seconds, 1e-9),
        tokens_per_second=tokens_seen / max(train_seconds, 1e-9),
        trainable_parameters=trainable,
    )


def init_distributed(ctx: RankContext) -> None:
    """Join the process group: Ray Train and torchrun start one; a lone process gets its own."""
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(ctx.local_rank)
    if not torch.distributed.is_initialized() and "MASTER_ADDR" not in os.environ:
        # A free port of its own, passed directly: environment variables would leak into
        # child processes, which would then try to listen on the same port.
        torch.distributed.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
        )
    # DeepSpeed reads these even when the group exists (Ray Train does not set them).
    for name, value in (("RANK", ctx.rank), ("LOCAL_RANK", ctx.local_rank),
                        ("WORLD_SIZE", ctx.world_size)):  # fmt: skip
        os.environ.setdefault(name, str(value))
    deepspeed.init_distributed(dist_backend=backend)


@torch.no_grad()
def evaluate(
    engine: Any, source: BatchSource, ctx: RankContext, batch_size: int, data: PreparedData
) -> dict[str, float]:
    """Metrics on the whole eval split: each rank scores its shard, then all gather."""
    engine.eval()
    rows, real = eval_shard(len(source.split), ctx.rank, ctx.world_size)
    if data.labels is None:  # language modelling: loss summed over real target tokens
        totals = torch.zeros(2, dtype=torch.float64, device=engine.device)  # NCCL: on GPU
        for start in range(0, len(rows), batch_size):
            batch = source.batch(rows[start : start + batch_size], engine.device)
            logits = engine(**{k: v for k, v in batch.items() if k != "labels"}).logits
            targets = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), targets, reduction="none"
            )
            # Rows past `real` are repeats that only keep ranks in step; they do not count.
            counted = (torch.arange(start, start + len(targets)) < real).to(losses.device)
            mask = (targets != -100) & counted.unsqueeze(1)
            totals += torch.stack([losses[mask].sum().double(), mask.sum().double()])
        torch.distributed.all_reduce(totals)
        return lm_metrics(float(totals[0]), int(totals[1]))
    logits = []
    for start in range(0, len(rows), batch_size):
        batch = source.batch(rows[start : start + batch_size], engine.device)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits.append(engine(**inputs).logits.float().cpu())
    mine = (rows[:real], torch.cat(logits)[:real].numpy())
    gathered: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(gathered, mine)
    table: dict[int, np.ndarray] = {}
    for shard_rows, shard_logits in gathered:
        table.update(zip(shard_rows.tolist(), shard_logits, strict=True))
    ordered = np.stack([table[i] for i in range(len(source.split))])
    return classification_metrics(ordered, source.split.labels, data.labels.names)


def export(
    engine: Any,
    prepared: Any,
    config: Config,
    data: PreparedData,
    metrics: dict[str, Any],
    directory: Path,
    ctx: RankContext,
) -> None:
    """Write the model being trained as an export. Every rank must call it under ZeRO-3.

    Under ZeRO-3 the weights are sharded across ranks: they are gathered onto rank 0 and
    loaded into an unsharded copy of the same (strategy-wrapped) model, which is exported.
    """
    model = engine.module
    if config.train.zero_stage == 3:
        state_dict = engine._zero3_consolidated_16bit_state_dict()  # collective
        if ctx.rank != 0:
            return
        # Rebuilding draws from the global RNG (new heads, LoRA init): fork it, so a run that
        # exports draws the same dropout as one resumed after the export.
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), zero3_paused():
            model, _ = load_base_model(config, data.labels)
            model = prepare(model, config).model
        model.load_state_dict(state_dict)
    if ctx.rank == 0:
        write_export(model, config, data.labels, metrics, directory)


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
    return (
        BatchSource(splits["train"], pad_id, features=torch.from_numpy(features["train"])),
        BatchSource(splits["eval"], pad_id, features=torch.from_numpy(features["eval"])),
    )


def _format(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("loss", "accuracy", "macro_f1", "perplexity") if k in metrics]
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
