"""The `train` section: optimisation, workers and checkpoints of `ftpipe train`.

Each field's docstring is its help text: it shows in `ftpipe config schema` and in error
messages, so it is written for the user.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ftpipe.config.base import Section


class TrainConfig(Section):
    """Optimisation settings for `ftpipe train`."""

    lr: float = Field(default=2e-5, gt=0.0, le=1.0)
    """Learning rate of the pretrained layers (about 10x below from-scratch rates)."""

    head_lr: float = Field(default=1e-4, gt=0.0, le=1.0)
    """Learning rate of new parameters: the head, adapters and virtual tokens."""

    layer_decay: float = Field(default=1.0, gt=0.0, le=1.0)
    """Layer-wise decay: block l of N gets lr * layer_decay**(N - l), the embeddings
    lr * layer_decay**N. 1.0 turns it off."""

    weight_decay: float = Field(default=0.01, ge=0.0)
    """AdamW weight decay; never applied to biases and norm weights. For a head fit on the
    feature cache, the L2 strength: mean cross-entropy + weight_decay / 2 * ||W||^2."""

    schedule: Literal["linear", "cosine", "constant"] = "linear"
    """Learning-rate decay after warmup."""

    warmup_steps: int = Field(default=0, ge=0)
    """Warmup length in optimizer steps; overrides `warmup_ratio` when above 0."""

    warmup_ratio: float = Field(default=0.06, ge=0.0, lt=1.0)
    """Warmup length as a share of all optimizer steps."""

    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (off for prefix tuning)."""

    zero_stage: int = Field(default=0, ge=0, le=3)
    """DeepSpeed ZeRO stage: 0 replicates everything, 1 shards optimizer state, 2 also
    gradients, 3 also the weights (largest models; gathered for export)."""

    offload_optimizer: bool = False
    """With ZeRO 1-3, keep optimizer state in host memory (DeepSpeed CPU offload)."""

    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Training precision: `auto` is bf16 on GPUs that support it, fp16 on older GPUs and
    fp32 on CPU."""

    max_grad_norm: float = Field(default=1.0, ge=0.0)
    """Clip the global gradient norm to this value; 0 turns clipping off."""

    epochs: int = Field(default=3, ge=1)
    """Passes over the training data."""

    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (the schedule spans them); null trains all epochs."""

    batch_size: int = Field(default=32, ge=1)
    """Global batch size: micro_batch_size x gradient accumulation x workers."""

    group_by_length: bool = False
    """Fill each step with rows of similar length (sorted within pools of 64 steps, the steps
    then shuffled), so little of each batch is padding: on SST-2's training split (batch 32 on
    2 workers) padding falls from 64% of the tokens computed to 3%. Each step is then a slice
    of a random pool, not a random sample."""

    micro_batch_size: int | None = Field(default=None, ge=1)
    """Rows per worker per forward pass; null is batch_size / workers (no accumulation), or
    batch_size / the most workers for a range. Smaller values trade speed for memory through
    gradient accumulation."""

    num_workers: int | tuple[int, int] = Field(default=2)
    """Ray Train workers (one process, and one GPU where used, each). A range `[min, max]`
    scales elastically (Ray Train's elastic training): the run starts with as many as the
    cluster holds, goes on with fewer when a node dies and grows back when it returns. The
    global batch stays `batch_size`: with fewer workers, gradient accumulation rises."""

    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """How workers are placed on nodes: `PACK` fills a node first, `SPREAD` puts them on
    different nodes where it can (one node's loss then costs fewer workers); the `STRICT_`
    forms fail to start rather than bend."""

    storage: str | None = None
    """Where Ray Train keeps checkpoints and results: an `s3://` or `gs://` URI (credentials
    and endpoint from the environment: AWS_* for S3 and MinIO, GOOGLE_APPLICATION_CREDENTIALS),
    or a file-system path every node mounts at the same place. Null keeps them under
    `output_dir` on this machine, which a Ray cluster of more than one node refuses: its
    workers could not read each other's checkpoints."""

    use_gpu: Literal["auto"] | bool = "auto"
    """Give each worker a GPU; `auto` uses GPUs when the Ray cluster has them."""

    cpus_per_worker: float = Field(default=1.0, gt=0.0)
    """CPUs reserved per Ray Train worker."""

    ray_address: str | None = None
    """Ray cluster to join (for example `ray://head:10001` or `auto`); null starts a local Ray
    on this machine."""

    max_failures: int = Field(default=2, ge=-1)
    """Worker-failure restarts before the run fails (-1: unlimited); each restart resumes at
    the last checkpoint's step."""

    eval_every_steps: int = Field(default=0, ge=0)
    """Evaluate and checkpoint every N optimizer steps, and always at each epoch end;
    0 only at epoch ends."""

    metric: str = "auto"
    """Metric for early stopping and the best checkpoint: one the task reports (accuracy,
    macro_f1 or loss for sequence-classification; loss or perplexity for causal-lm), or `auto`:
    macro_f1 for classification, loss for language modelling. The task of `data.task` checks it
    when a command loads the config (`Task.check_config`)."""

    patience: int | None = Field(default=None, ge=1)
    """Stop after this many evaluations without improvement; null never stops early."""

    keep_checkpoints: int = Field(default=2, ge=1)
    """Checkpoints kept on disk: the best ones by `metric`; the latest is always kept too."""

    feature_cache: bool = True
    """For `feature-extraction`: compute the frozen backbone's features once and fit the
    head on the cache to convergence (full-batch L-BFGS, L2 `weight_decay`), in place of
    `epochs` of steps; the learning rates, schedule and `patience` then do not apply."""

    cache_dir: str = "outputs/cache/features"
    """Where the feature cache lives; shared by runs and sweep trials."""

    log_every_steps: int = Field(default=20, ge=1)
    """Log progress (loss, samples/s, ETA) every N optimizer steps."""

    train_on_eval: bool = False
    """Also train on the eval split (a sweep's final retrain on train + eval): evaluation then
    measures fit, not generalisation."""

    resume_from: str | None = None
    """A checkpoint directory to resume from; training continues at its step."""

    output_dir: str = "outputs/train"
    """Where checkpoints and the exported model (model/) are written."""

    @property
    def worker_range(self) -> tuple[int, int]:
        """The fewest and the most workers (the same for a fixed number)."""
        if isinstance(self.num_workers, int):
            return self.num_workers, self.num_workers
        return self.num_workers

    def micro_batch(self, world_size: int) -> int:
        """Rows per worker per forward pass on `world_size` workers.

        An elastic run keeps the micro-batch of its most workers, so that with fewer the
        accumulation rises and the global batch stays the same.
        """
        elastic = not isinstance(self.num_workers, int)
        return self.micro_batch_size or max(
            1, self.batch_size // (self.worker_range[1] if elastic else world_size)
        )

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainConfig:
        fewest, most = self.worker_range
        if fewest < 1 or fewest > most:
            raise ValueError(
                f"train.num_workers={list(self.worker_range)} must be a worker count of at "
                "least 1, or a range [min, max] with 1 <= min <= max"
            )
        for world in range(fewest, most + 1):
            micro = self.micro_batch(world)
            if self.batch_size % (micro * world):
                raise ValueError(
                    f"train.batch_size={self.batch_size} must be a multiple of "
                    f"train.micro_batch_size ({micro}) x train.num_workers ({world}), "
                    f"for example {micro * world}; or change train.micro_batch_size"
                    + (" or the worker range" if fewest < most else "")
                )
        return self
