"""The training core: plain torch + DeepSpeed, no Ray.

`train()` runs unchanged in a single process, under torchrun or the deepspeed launcher, and
inside a Ray Train worker (train/ray_train.py). The caller says who this process is (a
`RankContext`) and how to hand over metrics and checkpoints (a `report` callable); everything
else, from model loading to the export of the best model, happens here, top to bottom. What
differs between tasks (targets, metrics, the model class) comes from `data.task`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftpipe.config.schema import Config
from ftpipe.data.prepared import PreparedData
from ftpipe.strategies import prepare
from ftpipe.tasks import Evaluator
from ftpipe.train.batching import BatchSource, eval_shard, rank_order
from ftpipe.train.checkpoint import TrainerState, save_checkpoint
from ftpipe.train.distributed import RankContext, init_distributed
from ftpipe.train.export import write_export
from ftpipe.train.head_fit import fit_head
from ftpipe.train.model import load_base_model, zero3_paused
from ftpipe.train.packing import Padding
from ftpipe.train.reduction import average_gradients
from ftpipe.train.setup import Engine, RunPlan, build_engine, plan_run, resume_state

log = logging.getLogger(__name__)

__all__ = ["MetricsSink", "RankContext", "Report", "TrainResult", "init_distributed", "train"]

Report = Callable[[dict[str, Any], Path | None], None]
"""Called by every rank at every evaluation with the metrics and the checkpoint staging
directory (this rank's files); the directory may be deleted once the call returns."""

MetricsSink = Callable[[dict[str, float], int], None]
"""Called on rank 0 only, as the run goes, with metrics and the step they belong to: the
training curves (`train/loss`, `train/lr`, `train/grad_norm`, ...) every
`train.log_every_steps`, and the evaluation's `eval/<metric>` at every evaluation. An
experiment tracker plugs in here; the loop knows nothing of it."""


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
        padding: With `data.packing`, the share of computed tokens that are padding, packed
            and unpacked (`padding_share` and `padding_share_unpacked` in every evaluation's
            metrics too).
    """

    metrics: dict[str, Any]
    state: TrainerState
    start_step: int
    train_seconds: float
    samples_per_second: float
    tokens_per_second: float
    trainable_parameters: int
    padding: Padding | None = None


def train(
    config: Config,
    data: PreparedData,
    ctx: RankContext,
    report: Report,
    resume_from: Path | None = None,
    on_metrics: MetricsSink | None = None,
) -> TrainResult:
    """Fine-tune `config.model` on prepared data with `config.strategy`; see module docstring.

    `on_metrics`, if given, receives the live curves on rank 0 (see `MetricsSink`).

    Raises:
        ConfigError: On settings that cannot work with this data or hardware.
        DataError: If the training data is too small for one global batch.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # load/save bars at every export drown the progress log
    init_distributed(ctx)
    plan = plan_run(config, data, ctx)
    run = build_engine(config, data, ctx, plan)
    state = resume_state(run.engine, resume_from, config, ctx, plan.total_steps)
    sink = on_metrics if ctx.rank == 0 else None
    progress = Progress(config, plan, ctx, state.step, data.task.counts_tokens, sink)
    exported = False  # every run exports at least once, also a resumed one that never improves
    metrics: dict[str, Any] = {}
    order, order_epoch = np.empty(0, dtype=np.int64), -1

    # --- The loop: one iteration per optimizer step ---------------------------------------
    for step in range(state.step, plan.total_steps):
        epoch, index = divmod(step, plan.steps_per_epoch)
        if epoch != order_epoch:  # each epoch has its own seeded order (so resume is exact)
            order = rank_order(plan.train_split.lengths, config.seed, epoch, ctx.rank,
                               ctx.world_size, plan.batch.per_rank,
                               config.train.group_by_length)  # fmt: skip
            order_epoch = epoch
        if run.prepared.unfreeze is not None:  # gradual unfreezing: before the step it joins
            run.prepared.unfreeze.apply(step, plan.total_steps, announce=ctx.rank == 0)
        if plan.head_fit:  # cached features: the run's one step fits the head to convergence
            head, l2 = run.engine.module.classifier, config.train.weight_decay
            progress.add(*fit_head(head, run.train_source, l2, announce=ctx.rank == 0))
        else:
            per_rank = plan.batch.per_rank
            rows = order[index * per_rank : (index + 1) * per_rank]
            progress.add(*train_step(run, rows, plan, norm=progress.measures(step + 1)))
        done = step + 1
        progress.log(done, run.scheduler)
        if not plan.evaluates_after(done, config.train.eval_every_steps):
            continue

        # --- Evaluate, decide, checkpoint (every rank: the saves are collective) ----------
        evaluator = data.task.evaluator(plan.eval_split, data.labels)
        evaluated = evaluate(run.engine, run.eval_source, ctx, plan.batch.micro, evaluator)
        metrics = evaluated | progress.fields(done)
        improved = track_best(state, metrics, plan, done)
        stop = config.train.patience is not None and state.bad_evals >= config.train.patience
        if ctx.rank == 0:
            note = "best" if improved else f"{state.bad_evals} without improvement"
            log.info("eval @ step %d: %s  (%s)", done, _format(metrics), note)
        progress.evaluated(evaluated, done)
        with tempfile.TemporaryDirectory(prefix="ftpipe-ckpt-") as staging:
            save_checkpoint(run.engine, Path(staging), state, ctx.rank)
            metrics["exported"] = improved or not exported
            if metrics["exported"]:  # the best model so far: the checkpoint to keep for good
                export(run, config, data, metrics, Path(staging) / "model", ctx)
                exported = True
            report({**metrics, "best": state.best, "best_step": state.best_step,
                    "bad_evals": state.bad_evals}, Path(staging))  # fmt: skip
        if stop:
            if ctx.rank == 0:
                log.info(
                    "Early stopping: %s did not improve for %d evaluations (best %.4f at step %d)",
                    plan.metric, state.bad_evals, state.best, state.best_step,
                )  # fmt: skip
            break

    return progress.result(metrics, state, run.trainable_parameters)


def train_step(
    run: Engine, rows: np.ndarray, plan: RunPlan, norm: bool = False
) -> tuple[float, int, int, float, float | None]:
    """One optimizer step over this rank's rows.

    Returns:
        (mean loss, rows, real tokens, seconds, gradient norm): rows and tokens count every
        rank's; the global gradient norm before clipping only with `norm`, else None.
    """
    started = time.perf_counter()
    run.engine.train()
    loss_sum, tokens, grad_norm = 0.0, 0, None
    for micro_rows in rows.reshape(plan.batch.accumulation, plan.batch.micro):
        batch = run.train_source.batch(micro_rows, run.engine.device)
        loss = run.engine(**batch).loss
        run.engine.backward(loss)
        if run.engine.is_gradient_accumulation_boundary():
            if run.averages_gradients:
                average_gradients(run.engine.module)  # before the step clips and applies them
            if norm:
                grad_norm = _plain_grad_norm(run.engine)
        run.engine.step()  # DeepSpeed applies the optimizer on the accumulation boundary
        loss_sum += loss.item() / plan.batch.accumulation
        tokens += run.train_source.tokens(micro_rows) * plan.batch.world_size
    if norm and grad_norm is None:
        found = run.engine.get_global_grad_norm()
        grad_norm = None if found is None else float(found)
    return loss_sum, plan.batch.global_batch, tokens, time.perf_counter() - started, grad_norm


def _plain_grad_norm(engine: Any) -> float | None:
    """The gradient norm where DeepSpeed keeps none (full-precision ZeRO-0), else None.

    Its plain optimizer clips without recording the norm and drops the gradients at its step;
    the ZeRO and half-precision optimizers record theirs (`get_global_grad_norm`).
    """
    if engine.zero_optimization() or engine.fp16_enabled() or engine.bfloat16_enabled():
        return None
    grads = [p.grad.detach() for p in engine.module.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else None


def track_best(state: TrainerState, metrics: dict[str, Any], plan: RunPlan, done: int) -> bool:
    """Record an evaluation in `state`; return whether it is the best so far.

    Checkpoints are ranked by `metrics["score"]`: the metric, except that one which only ties
    the best ranks below it, so the top-ranked checkpoint is always the exported best.
    """
    value, higher = metrics[plan.metric], plan.higher_is_better
    improved = state.best is None or (value > state.best if higher else value < state.best)
    if improved:
        state.best, state.best_step, state.bad_evals = value, done, 0
    else:
        state.bad_evals += 1
    pick, tie_break = (min, 1e-9) if higher else (max, -1e-9)
    metrics["score"] = value if improved else pick(value, state.best) - tie_break
    state.step = done
    state.history.append(metrics)
    return improved


class Progress:
    """Throughput counters and the progress log line every `train.log_every_steps`."""

    def __init__(
        self, config: Config, plan: RunPlan, ctx: RankContext, start: int, tokens: bool,
        sink: MetricsSink | None = None,
    ):  # fmt: skip
        self.plan, self.ctx, self.start, self.show_tokens = plan, ctx, start, tokens
        self.every, self.sink = config.train.log_every_steps, sink
        self.train_seconds, self.rows, self.tokens = 0.0, 0, 0
        self.window_loss, self.window_steps, self.grad_norm = 0.0, 0, None
        self.started = time.perf_counter()  # the ETA counts evaluations and checkpoints too
        if ctx.rank == 0 and not plan.head_fit:  # the head fit logs its own progress
            b = plan.batch
            log.info(
                "Training %d steps (%d per epoch x %d epochs%s): global batch %d = %d micro x %d "
                "accumulation x %d workers, %s, ZeRO-%d",
                plan.total_steps, plan.steps_per_epoch, config.train.epochs,
                ", capped by train.max_steps" if config.train.max_steps else "",
                b.global_batch, b.micro, b.accumulation, ctx.world_size, plan.precision,
                config.train.zero_stage,
            )  # fmt: skip
            if plan.padding is not None:
                log.info(plan.padding.describe())

    def add(
        self, loss: float, rows: int, tokens: int, seconds: float, grad_norm: float | None = None
    ) -> None:
        """Count one optimizer step (with its gradient norm when it was measured)."""
        self.train_seconds += seconds
        self.rows += rows
        self.tokens += tokens
        self.window_loss += loss
        self.window_steps += 1
        self.grad_norm = grad_norm

    def due(self, done: int) -> bool:
        """Whether a progress line (and the live training metrics) is due after `done` steps."""
        return not self.plan.head_fit and (done % self.every == 0 or done == self.plan.total_steps)

    def log(self, done: int, scheduler: Any) -> None:
        """Log the window's mean loss, the rates and the ETA when a line is due."""
        if not self.due(done):
            return
        if self.sink is not None:
            self.sink(self.curves(done, max(scheduler.get_last_lr())), done)
        if self.ctx.rank == 0:
            steps_per_s = (done - self.start) / (time.perf_counter() - self.started)
            tokens = (
                f"  {self.tokens / self.train_seconds:,.0f} tokens/s" if self.show_tokens else ""
            )
            eta = int((self.plan.total_steps - done) / max(steps_per_s, 1e-9))
            log.info(
                "step %d/%d  epoch %.2f  loss %.4f  lr %.2e  %.2f steps/s  %.1f samples/s%s"
                "  ETA %d:%02d:%02d",
                done, self.plan.total_steps, done / self.plan.steps_per_epoch,
                self.window_loss / self.window_steps, max(scheduler.get_last_lr()), steps_per_s,
                self.rows / self.train_seconds, tokens, eta // 3600, eta % 3600 // 60, eta % 60,
            )  # fmt: skip
        self.window_loss, self.window_steps = 0.0, 0

    def measures(self, done: int) -> bool:
        """Whether the step ending at `done` should measure its gradient norm (it is logged)."""
        return self.sink is not None and self.due(done)

    def evaluated(self, scores: dict[str, float], done: int) -> None:
        """Hand an evaluation's scores to the sink as it happens.

        So a tracker charts them while the run goes, not after it.
        """
        if self.sink is not None:
            epoch = done / self.plan.steps_per_epoch
            self.sink({f"eval/{k}": v for k, v in scores.items()} | {"epoch": epoch}, done)

    def curves(self, done: int, lr: float) -> dict[str, float]:
        """The window's training metrics, for a tracker's charts."""
        curves = {
            "train/loss": self.window_loss / self.window_steps,
            "train/lr": lr,
            "train/samples_per_second": self.rows / max(self.train_seconds, 1e-9),
            "epoch": done / self.plan.steps_per_epoch,
        }
        return curves | ({} if self.grad_norm is None else {"train/grad_norm": self.grad_norm})

    def fields(self, done: int) -> dict[str, Any]:
        """Where an evaluation happened, for its metrics."""
        return {
            "step": done,
            "epoch": done / self.plan.steps_per_epoch,
            "start_step": self.start,
            # An elastic run's worker count may change at a restart; the global batch doesn't.
            "workers": self.ctx.world_size,
            "accumulation": self.plan.batch.accumulation,
            "train_samples_per_second": self.rows / max(self.train_seconds, 1e-9),
            **(self.plan.padding.fields() if self.plan.padding is not None else {}),
        }

    def result(self, metrics: dict[str, Any], state: TrainerState, trainable: int) -> TrainResult:
        """The run's result with its throughput."""
        seconds = max(self.train_seconds, 1e-9)
        return TrainResult(metrics, state, self.start, self.train_seconds, self.rows / seconds,
                           self.tokens / seconds, trainable, self.plan.padding)  # fmt: skip


@torch.no_grad()
def evaluate(
    engine: Any, source: BatchSource, ctx: RankContext, batch_size: int, evaluator: Evaluator
) -> dict[str, float]:
    """The task's metrics on the whole eval split: each rank scores its shard, then reduce."""
    engine.eval()
    rows, real = eval_shard(len(source.split), ctx.rank, ctx.world_size)
    for start in range(0, len(rows), batch_size):
        batch = source.batch(rows[start : start + batch_size], engine.device)
        logits = engine(**{k: v for k, v in batch.items() if k != "labels"}).logits
        # Rows past `real` are repeats that only keep ranks in step; they do not count.
        own = np.arange(start, start + len(logits)) < real
        evaluator.update(logits, batch["labels"], rows[start : start + batch_size], own)
    return evaluator.compute(ctx.world_size)


def export(
    run: Engine,
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
    model = run.engine.module
    if config.train.zero_stage == 3:
        state_dict = run.engine._zero3_consolidated_16bit_state_dict()  # collective
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


def _format(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("loss", "accuracy", "macro_f1", "perplexity") if k in metrics]
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)
