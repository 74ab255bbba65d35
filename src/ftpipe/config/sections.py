"""The config sections of the stages around training.

Recommend, tune, registry, pipeline, evaluate and promote (train's is config/train.py).
Each field's docstring is its help text: it shows in `ftpipe config schema` and in error
messages, so it is written for the user.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Literal

from pydantic import (
    Field,
)

from ftpipe.config.base import FrozenMapping, Section


class RecommendConfig(Section):
    """`ftpipe recommend`: how measured data size and similarity map to a strategy.

    Data is large when its smallest class has at least `large_per_class` rows. It is similar
    to the pretraining data when its text lies near the shipped reference prose (embedding
    distance, and pseudo-perplexity where the checkpoint has a masked-LM head) and the
    tokenizer sees few unknown tokens and few pieces per word. For small, similar data a linear
    probe on frozen features picks between a head alone and LoRA.
    """

    probe_rows: int = Field(default=2000, ge=20)
    """Training rows sampled (stratified, seeded) for the linear probe."""

    probe_folds: int = Field(default=5, ge=2, le=20)
    """Cross-validation folds of the probe."""

    large_per_class: int = Field(default=1000, ge=1)
    """Rows in the smallest class from which the data counts as large."""

    similar_probe_lift: float = Field(default=0.6, gt=0.0, le=1.0)
    """Sentence classification: probe lift, (accuracy - majority) / (1 - majority), from which
    small, similar data trains a head alone (feature extraction) rather than LoRA."""

    similar_probe_f1: float = Field(default=0.8, gt=0.0, le=1.0)
    """Token classification: the per-word probe's entity F1 from which small, similar data
    trains a head alone (feature extraction) rather than LoRA."""

    max_embedding_distance: float = Field(default=0.25, gt=0.0, le=2.0)
    """Cosine distance between the data's mean embedding and the reference prose's above which
    data counts as dissimilar (calibration in README.md)."""

    max_perplexity_ratio: float = Field(default=4.0, gt=0.0)
    """Masked-LM pseudo-perplexity, the data's over the reference's, above which data counts as
    dissimilar; measured only where the checkpoint ships its masked-LM head."""

    perplexity_rows: int = Field(default=64, ge=1)
    """Rows of the data and of the reference scored for pseudo-perplexity (one forward pass per
    token)."""

    max_unknown_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    """Unknown-token rate (from prep) above which data counts as dissimilar."""

    max_pieces_per_word: float = Field(default=1.5, ge=1.0)
    """Word pieces per word (from prep) above which data counts as dissimilar."""

    output_dir: str = "outputs/recommend"
    """Where recommendation.json and recommendation.txt are written."""


class TuneConfig(Section):
    """The Ray Tune sweep (`ftpipe tune`): one Ray Train run per trial."""

    num_trials: int = Field(default=8, ge=1)
    """Trials to sample (with `search: grid`, repeats of the whole grid)."""

    max_concurrent_trials: int = Field(default=2, ge=1)
    """Trials that run at once; each takes train.num_workers x train.cpus_per_worker CPUs."""

    search_space: FrozenMapping = Field(default_factory=lambda: MappingProxyType({}))
    """Dotted config path to a sampler, for example `train.lr: loguniform(1e-5, 5e-4)` or
    `strategy.freeze_layers: choice([0, 2, 4])`; empty takes the space `ftpipe recommend`
    suggested."""

    search: Literal["random", "grid", "optuna"] = "random"
    """Search algorithm: seeded random sampling, the full grid of `choice` values, or Optuna's
    TPE."""

    scheduler: Literal["asha", "hyperband", "none"] = "asha"
    """`asha` stops trials whose metric trails the others at each rung; `hyperband` spreads
    the trials over three brackets of ASHA with ever later first cuts (asynchronous
    HyperBand), for when it is unclear how early trials can be judged; `none` runs every
    trial to the end."""

    grace_period: float | None = Field(default=None, gt=0)
    """ASHA and HyperBand: epochs of training every trial gets before it may be stopped. Null
    sets it from the strategies in the search space: one epoch, or half of `train.epochs`
    (at least one epoch) when a slow starter (LoRA, IA3, prompt learning) is among them."""

    reduction_factor: int = Field(default=3, ge=2)
    """ASHA: 1 in this many trials continues past each rung."""

    time_budget_s: float | None = Field(default=None, gt=0)
    """Stop starting and running trials after this many seconds; null has no time limit."""

    final: Literal["reuse", "retrain", "none"] = "reuse"
    """After the sweep: `reuse` exports the best trial's best checkpoint, `retrain` trains the
    best config again on train + eval, `none` only reports."""

    storage: str | None = None
    """Where Ray Tune keeps the sweep's state and each trial's checkpoints: an `s3://` or
    `gs://` URI, or a path every node mounts (as `train.storage`). Null keeps them under
    `output_dir` on this machine, for one node only. `tune --resume` and `final: reuse` read
    from it."""

    output_dir: str = "outputs/tune"
    """Where the sweep writes results.csv, best.yaml, the plots, and the final model."""


class RegistryConfig(Section):
    """MLflow tracking and the model registry."""

    tracking_uri: str = "sqlite:///mlflow.db"
    """MLflow tracking URI; credentials come from the environment, never from this file."""

    model_name: str = "ftpipe-classifier"
    """Registered model name."""

    experiment_name: str = "ftpipe"
    """MLflow experiment that training, sweep and evaluation runs are logged to."""

    log_system_metrics: bool = True
    """Sample CPU, memory, disk and (with pynvml) GPU use into each training run."""


class Toleration(Section):
    """A Kubernetes toleration, so a stage's pod may run on tainted (e.g. GPU) nodes."""

    key: str
    """The taint key, e.g. nvidia.com/gpu."""
    operator: Literal["Equal", "Exists"] = "Exists"
    """Equal matches `value`; Exists matches any value of the key."""
    value: str | None = None
    """The taint value (with operator Equal)."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to tolerate; all effects when unset."""


class StageConfig(Section):
    """How one pipeline stage's pod runs on a Kubeflow cluster (the local runner ignores it)."""

    image: str | None = None
    """Container image of this stage; default pipeline.image."""
    cpu: str | None = None
    """CPU request and limit, e.g. "2" or "500m"; unset leaves it to the cluster."""
    memory: str | None = None
    """Memory request and limit, e.g. "8G"; unset leaves it to the cluster."""
    gpu: int = Field(default=0, ge=0)
    """GPUs for the stage's own pod (Ray workers get theirs from the Ray cluster)."""
    gpu_resource: str = "nvidia.com/gpu"
    """The Kubernetes resource name of the GPUs."""
    node_selector: FrozenMapping = Field(default_factory=lambda: MappingProxyType({}))
    """Node labels the pod must match, e.g. {pool: cpu}."""
    tolerations: tuple[Toleration, ...] = ()
    """Taints the pod tolerates."""
    retries: int = Field(default=0, ge=0, le=10)
    """Retries of a failed stage (KFP retry policy); the first retry waits backoff_s."""
    backoff_s: float = Field(default=60.0, gt=0)
    """Wait before the first retry; each further retry waits twice as long, at most 1 h."""
    caching: bool = True
    """Reuse the stage's outputs when its inputs (config hash and data fingerprint) repeat."""


def _stage(**defaults: Any) -> Any:
    return Field(default_factory=lambda: StageConfig(**defaults))


class PipelineStages(Section):
    """Per-stage pod settings of the Kubeflow pipeline."""

    prep: StageConfig = _stage(cpu="2", memory="8G")
    """The prep stage: load, validate, split, tokenize."""
    recommend: StageConfig = _stage(cpu="2", memory="8G")
    """The recommend stage: the linear probe on frozen features."""
    tune: StageConfig = _stage(cpu="1", memory="2G", retries=2)
    """The tune stage: drives a Ray Tune sweep (the trials run on Ray)."""
    train: StageConfig = _stage(cpu="1", memory="2G", retries=2)
    """The train stage: drives a Ray Train run (the workers run on Ray)."""
    evaluate: StageConfig = _stage(cpu="2", memory="8G")
    """The evaluate stage: scores the model on the held-out split."""
    registry: StageConfig = _stage(cpu="1", memory="2G")
    """The register and promote stages: MLflow calls only."""


class PipelineConfig(Section):
    """The Kubeflow pipeline: its name, images and per-stage pod settings."""

    name: str = "ftpipe-finetune"
    """Kubeflow pipeline name."""
    image: str = "ftpipe:cpu"
    """Default container image of every stage (built by `make images`, infra/docker)."""
    stages: PipelineStages = Field(default_factory=PipelineStages)
    """Per-stage pod settings: image, resources, node selector, tolerations, retries."""
    ray_token_secret: str | None = "ray-auth-token"
    """Secret (key auth_token) mounted as RAY_AUTH_TOKEN into tune and train, for a Ray
    cluster with token authentication (infra/secrets/kubeflow.yaml); None: not mounted."""
    mlflow_secret: str | None = "mlflow-client-credentials"
    """Secret (keys username, password) mounted as MLFLOW_TRACKING_USERNAME/PASSWORD into
    every stage that talks to MLflow; None: not mounted."""
    local_root: str = "outputs/pipeline"
    """Where `ftpipe run` (the KFP local runner) keeps each stage's artifacts and its cache."""


class EvaluateConfig(Section):
    """`ftpipe evaluate`: held-out metrics per class, calibration and per-row predictions.

    The predictions file is what the promotion gate's paired bootstrap reads.
    """

    batch_size: int = Field(default=64, ge=1)
    """Rows per forward pass."""

    calibration_bins: int = Field(default=15, ge=2)
    """Equal-width confidence bins of the expected calibration error (ECE)."""

    latency_rows: int = Field(default=32, ge=0)
    """Single-row requests timed for the p95 latency that `promote.max_latency_ms` checks;
    0 skips the measurement."""

    generate_rows: int = Field(default=32, ge=0)
    """Causal LMs: held-out prompts answered by generation (`generate`) and scored by exact
    match and ROUGE-L against the reference; 0 scores loss and perplexity only."""

    output_dir: str = "outputs/evaluate"
    """Where metrics.json, predictions.parquet, confusion_matrix.png and evaluation.json go."""


class PromoteConfig(Section):
    """`ftpipe promote`: when the challenger replaces the champion.

    Both are compared on the same held-out set (same fingerprint). The challenger is promoted
    only if every rule holds: the paired-bootstrap confidence interval of (challenger -
    champion) lies above `margin`, no class's F1 drops by more than `max_class_f1_drop`, and
    the budgets that are set hold. With no champion yet, the interval's lower bound of the
    metric must reach `floor`.
    """

    metric: str = "auto"
    """The metric the challenger must improve: one the task's promotion gate compares
    (macro_f1 or accuracy for sequence-classification, entity_f1 for token-classification);
    `auto` is the task's first (macro_f1, entity_f1). The task of `data.task` checks it when a
    command loads the config (`Task.check_config`)."""

    margin: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Smallest improvement that counts: the interval's lower bound must exceed it."""

    confidence: float = Field(default=0.95, ge=0.5, lt=1.0)
    """Two-sided confidence level of the bootstrap intervals."""

    bootstrap_samples: int = Field(default=2000, ge=100)
    """Paired bootstrap resamples of the held-out rows (seeded by `seed`)."""

    max_class_f1_drop: float = Field(default=0.05, ge=0.0, le=1.0)
    """Largest drop in any single class's F1 that does not block promotion."""

    floor: float = Field(default=0.0, ge=0.0, le=1.0)
    """With no champion, the lower bound of the metric's interval must reach this."""

    max_latency_ms: float | None = Field(default=None, gt=0.0)
    """Budget for p95 single-row latency (measured by `ftpipe evaluate`); null: no budget."""

    max_size_mb: float | None = Field(default=None, gt=0.0)
    """Budget for the model's size on disk, base model included for adapters; null: none."""

    lock_timeout_s: float = Field(default=600.0, gt=0.0)
    """Promotions of one model run one at a time; a lock held longer than this is taken to
    belong to a dead process and is broken."""
