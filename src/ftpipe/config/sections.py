"""The config sections that describe what is trained: data, model, strategy and training.

Each field's docstring is its help text: it shows in `ftpipe config schema` and in error
messages, so it is written for the user.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    field_validator,
    model_validator,
)

StrategyName = Literal[
    "auto",
    "full",
    "freeze",
    "feature-extraction",
    "lora",
    "ia3",
    "prefix",
    "p-tuning",
    "prompt-tuning",
    "gradual-unfreezing",
]


def _label_names(value: Any) -> Any:
    # Labels may be written as integers (0, 1) or strings; both name a class.
    if isinstance(value, (list, tuple)):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"data.labels repeats {', '.join(map(repr, repeated))}; list each once")
    return names


LabelNames = Annotated[
    tuple[str, ...], BeforeValidator(_label_names), AfterValidator(_unique), Field(min_length=2)
]
"""Declared labels: strings or integers, each once; stored as an immutable tuple of names."""

FrozenMapping = Annotated[
    Mapping[str, str],
    AfterValidator(lambda value: MappingProxyType(dict(value))),
    PlainSerializer(dict, return_type=dict),
]
"""A read-only mapping, so a frozen config cannot change under its hash."""

Column = str | StrictInt
"""A column name, or a 0-based index (booleans are not indexes)."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors and values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class DataConfig(Section):
    """Where the labelled data is, how to read and validate it, and where prep writes."""

    train: str
    """Training data: a local path, an fsspec URI (file://, s3://, gs://), or `hf:NAME:SPLIT`
    for a Hugging Face dataset. Formats: .csv, .tsv, .jsonl, .parquet."""

    eval: str | None = None
    """Held-out data in the same forms as `train`. Null splits it from train (stratified,
    seeded by `seed`)."""

    task: Literal["sequence-classification", "causal-lm"] = "sequence-classification"
    """The task (`ftpipe.tasks`). `sequence-classification` (earlier name: `classification`):
    text (or text pairs) with a label. `causal-lm`: language-model fine-tuning on text, or on
    prompt + completion (`completion_column`) with the loss on the completion only; no
    labels."""

    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    """File format; `auto` picks it from the file extension."""

    has_header: bool = True
    """Whether CSV/TSV files start with a header line. Without one, columns are 0-based
    indexes."""

    text_column: Column = "text"
    """Column holding the text: a name, or a 0-based index when `has_header` is false."""

    text_pair_column: Column | None = None
    """Optional column holding a second text, for sentence-pair tasks."""

    label_column: Column = "label"
    """Column holding the label: a string or an integer per row (classification)."""

    completion_column: Column | None = None
    """For `task: causal-lm`: a column holding each row's completion; `text_column` is then the
    prompt, and the loss covers the completion only."""

    labels: LabelNames | None = None
    """Declared label set, in id order (strings or integers). Rows with other labels are
    invalid. Null infers the set from the training data (integers sort numerically, strings
    alphabetically)."""

    hf_config: str | None = None
    """Configuration (subset) name for a `hf:` dataset, for example `sst2` for GLUE."""

    max_length: int = Field(default=128, ge=8, le=8192)
    """Maximum tokens per example, special tokens included; longer examples are truncated."""

    eval_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    """Share of each class held out for evaluation when `eval` is null."""

    max_train_rows: int | None = Field(default=None, ge=2)
    """Keep about this many training rows, a stratified seeded sample taken after the eval
    split (quick runs and CPU benchmarks); null keeps them all."""

    max_eval_rows: int | None = Field(default=None, ge=2)
    """Keep about this many eval rows, stratified and seeded (cheaper evaluation in sweeps and
    benchmarks); null keeps them all."""

    on_error: Literal["fail", "drop"] = "fail"
    """What to do with invalid rows (empty text, missing or unknown label, bad UTF-8, oversize,
    conflicting labels, train/eval leakage): `fail` stops and names the rows; `drop` removes
    them and reports the counts."""

    duplicates: Literal["drop", "keep", "fail"] = "drop"
    """Exact duplicate rows (same text, same label): `drop` keeps the first and warns."""

    max_chars: int = Field(default=20_000, ge=1)
    """Rows whose text (plus pair) is longer than this many characters are invalid."""

    shard_rows: int = Field(default=50_000, ge=1)
    """Rows per Parquet shard in the prep output."""

    output_dir: str = "outputs/prep"
    """Directory prep writes to: train/ and eval/ shards, label_map.json, stats.json and
    fingerprint.json. Prep replaces it whole once the new outputs are complete, and refuses a
    directory it did not write."""

    @field_validator("task", mode="before")
    @classmethod
    def _earlier_task_name(cls, value: Any) -> Any:
        return "sequence-classification" if value == "classification" else value

    @model_validator(mode="after")
    def _columns_match_header(self) -> DataConfig:
        lm = self.task == "causal-lm"
        if lm and self.text_pair_column is not None:
            raise ValueError(
                "data.text_pair_column is for classification; with data.task=causal-lm use "
                "data.completion_column for prompt + completion rows"
            )
        if lm and self.labels is not None:
            raise ValueError(
                "data.labels declares classes, but data.task=causal-lm has no labels; remove "
                "data.labels or set data.task=sequence-classification"
            )
        if not lm and self.completion_column is not None:
            raise ValueError(
                "data.completion_column needs data.task=causal-lm; for sentence pairs use "
                "data.text_pair_column"
            )
        columns = {
            "text_column": self.text_column,
            "text_pair_column": self.text_pair_column,
            "label_column": None if lm else self.label_column,
            "completion_column": self.completion_column,
        }
        for key, value in columns.items():
            if value is None:
                continue
            if not self.has_header and not isinstance(value, int):
                raise ValueError(
                    f"data.{key} is {value!r}, but data.has_header is false: give a 0-based "
                    "column index, or set data.has_header=true"
                )
            if isinstance(value, int) and value < 0:
                raise ValueError(f"data.{key} must be a 0-based column index, got {value}")
        return self


class ModelConfig(Section):
    """The pretrained base model."""

    name: str = "all-MiniLM-L6-v2"
    """Base model: the built-in alias `all-MiniLM-L6-v2` (packaged, works offline), a local
    directory, or a Hugging Face Hub id."""

    revision: str | None = None
    """Hub revision (branch, tag or commit) to pin; ignored for local directories."""


class LoraConfig(Section):
    """LoRA adapter settings (strategy `lora`)."""

    r: int = Field(default=8, ge=1)
    """Rank of the low-rank update."""

    alpha: int = Field(default=16, ge=1)
    """Scaling numerator: the update is scaled by alpha / r."""

    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Dropout on the adapter's input."""

    target_modules: tuple[str, ...] | None = None
    """Module names to adapt; null picks them per architecture (attention projections where
    PEFT knows the model, else every linear layer)."""


class PromptConfig(Section):
    """Virtual-token settings (strategies `prefix`, `p-tuning`, `prompt-tuning`)."""

    num_virtual_tokens: int = Field(default=20, ge=1)
    """Learned tokens prepended to every input."""

    encoder_hidden_size: int = Field(default=128, ge=1)
    """Hidden size of the p-tuning prompt encoder."""


class StrategyConfig(Section):
    """How much of the pretrained model trains."""

    name: StrategyName = "auto"
    """Fine-tuning strategy; `auto` takes the one `ftpipe recommend` picks."""

    freeze_layers: int = 0
    """For `freeze`: freeze the embeddings plus the first k layers; negative k keeps only the
    last |k| layers trainable."""

    freeze_patterns: tuple[str, ...] = ()
    """For `freeze`: also freeze parameters whose names match any of these shell patterns,
    for example `*.attention.*`."""

    unfreeze_every: int = Field(default=1, ge=1)
    """For `gradual-unfreezing`: epochs between unfreezing one more block from the top."""

    lora: LoraConfig = Field(default_factory=LoraConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)

    pooling: Literal["auto", "mean", "cls", "last"] = "auto"
    """How token states become one feature vector for feature extraction and the probe:
    `auto` is `last` for decoders and `mean` otherwise."""

    merge_adapter: bool = True
    """On export, merge a LoRA or IA3 adapter into the base weights (a plain transformers
    model); false exports the adapter alone."""


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
    """AdamW weight decay; never applied to biases and norm weights."""

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

    micro_batch_size: int | None = Field(default=None, ge=1)
    """Rows per worker per forward pass; null is batch_size / workers (no accumulation).
    Smaller values trade speed for memory through gradient accumulation."""

    num_workers: int = Field(default=2, ge=1)
    """Ray Train workers (one process, and one GPU where used, each)."""

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

    metric: Literal["auto", "accuracy", "macro_f1", "loss", "perplexity"] = "auto"
    """Metric for early stopping and the best checkpoint: `auto` is macro_f1 for
    classification and loss for language modelling."""

    patience: int | None = Field(default=None, ge=1)
    """Stop after this many evaluations without improvement; null never stops early."""

    keep_checkpoints: int = Field(default=2, ge=1)
    """Checkpoints kept on disk: the best ones by `metric`; the latest is always kept too."""

    feature_cache: bool = True
    """For `feature-extraction`: compute the frozen backbone's features once and train the
    head on the cache."""

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

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainConfig:
        micro = self.micro_batch_size or max(1, self.batch_size // self.num_workers)
        if self.batch_size % (micro * self.num_workers):
            raise ValueError(
                f"train.batch_size={self.batch_size} must be a multiple of "
                f"train.micro_batch_size ({micro}) x train.num_workers ({self.num_workers}), "
                f"for example {micro * self.num_workers}; or change train.micro_batch_size"
            )
        return self
