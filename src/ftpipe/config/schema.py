"""The config schema: one frozen, typed object per run.

Each field's docstring is its help text: it shows in `ftpipe config schema` and in error
messages, so it is written for the user. Sections map one-to-one to pipeline stages; this
module holds the data, model and strategy sections and the `Config` that joins them all, and
`ftpipe.config.sections` the others.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    field_validator,
    model_validator,
)

from ftpipe.config.base import Column, LabelNames, Section, StrategyName
from ftpipe.config.rules import merge_problem, zero_stage_problem
from ftpipe.config.sections import (
    EvaluateConfig,
    PipelineConfig,
    PromoteConfig,
    RecommendConfig,
    RegistryConfig,
    TrainConfig,
    TuneConfig,
)


class DataConfig(Section):
    """Where the labelled data is, how to read and validate it, and where prep writes."""

    train: str
    """Training data: a local path, an fsspec URI (file://, s3://, gs://), or `hf:NAME:SPLIT`
    for a Hugging Face dataset. Formats: .csv, .tsv, .jsonl, .parquet."""

    eval: str | None = None
    """Held-out data in the same forms as `train`, on which the sweep picks its best trial and
    training its best checkpoint. Null splits it from train (stratified, seeded by `seed`)."""

    test: str | None = None
    """Test data in the same forms as `train`: `evaluate` scores it and the promotion gate
    decides on it; tune and train never read it. Null with `test_fraction` above 0 splits it
    from train; null with `test_fraction` 0 holds out none, and the gate then decides on eval,
    whose interval is optimistic because eval also selected the model."""

    task: Literal["sequence-classification", "token-classification", "causal-lm"] = (
        "sequence-classification"
    )
    """The task (`ftpipe.tasks`). `sequence-classification` (earlier name: `classification`):
    text (or text pairs) with a label. `token-classification`: named entities, a list of words
    with one tag each (columns `tokens` and `tags` unless `text_column` / `label_column` say
    otherwise). `causal-lm`: language-model fine-tuning on text, or on prompt + completion
    (`completion_column`) with the loss on the completion only; no labels."""

    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "conll"] = "auto"
    """File format; `auto` picks it from the file extension (.conll, .iob and .bio are CoNLL,
    and so is .txt with `task: token-classification`)."""

    tag_column: int | None = Field(default=None, ge=1)
    """CoNLL files: the 0-based field of each line that holds the tag (the word is field 0);
    null takes the last field, as in `word POS chunk tag` lines."""

    repair_spans: bool = True
    """Token classification: an `I-X` that follows `O` or another type is repaired to `B-X`,
    counted and warned about; false refuses the file, naming the line."""

    stride: int | None = Field(default=16, ge=0)
    """Token classification: a sentence longer than `max_length` sub-words is split into
    windows, each sharing this many sub-words of context with the one before, so every word is
    trained on and scored once; null truncates such sentences instead (counted in stats)."""

    label_all_subwords: bool = False
    """Token classification: train every sub-word of a word on its tag, not only the first
    (the others get -100). Predictions still read the first sub-word."""

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

    messages_column: Column | None = None
    """For `task: causal-lm`: a column holding each row's conversation, a list of messages
    with a `role` (system, user, assistant) and a `content` (ShareGPT's `from` and `value`,
    with human and gpt, read too). It is read in place of `text_column`, and the loss covers
    the assistant turns only."""

    chat_template: str = "auto"
    """For `messages_column`: how a conversation becomes text. `auto` is the tokenizer's own
    chat template; `chatml`, `llama3` and `plain` are shipped with ftpipe; or a `.jinja` file."""

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

    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Share of each class held out as the test split when `test` is null (stratified, seeded
    by `seed`, taken before eval, so it stays the same when `eval_fraction` changes); 0 holds
    out none."""

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

    min_rows_per_class: int = Field(default=5, ge=1)
    """Prep warns about a class with fewer training rows than this, or with no eval rows; it
    changes no output, only the warnings."""

    output_dir: str = "outputs/prep"
    """Directory prep writes to: train/, eval/ (and test/) shards, label_map.json, stats.json
    and fingerprint.json. Prep replaces it whole once the new outputs are complete, and refuses a
    directory it did not write."""

    @field_validator("task", mode="before")
    @classmethod
    def _earlier_task_name(cls, value: Any) -> Any:
        return "sequence-classification" if value == "classification" else value

    @model_validator(mode="before")
    @classmethod
    def _token_columns(cls, values: Any) -> Any:
        """The columns a task reads by default, and a conversation's as the text.

        Token classification reads `tokens` and `tags` unless the columns are named.
        """
        if isinstance(values, dict) and values.get("task") == "token-classification":
            values = {"text_column": "tokens", "label_column": "tags", **values}
        if isinstance(values, dict) and values.get("messages_column") is not None:
            values = {**values, "text_column": values["messages_column"]}
        return values

    @model_validator(mode="after")
    def _one_test_split(self) -> DataConfig:
        if self.test is not None and self.test_fraction > 0:
            raise ValueError(
                f"data.test ({self.test}) and data.test_fraction ({self.test_fraction}) both "
                "ask for a test split: a file, and a share of train. Keep one: set "
                "data.test_fraction=0 to test on the file, or data.test=null to split the test "
                "set off train"
            )
        if self.eval is None and self.test is None and self.eval_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"data.eval_fraction ({self.eval_fraction}) plus data.test_fraction "
                f"({self.test_fraction}) hold out all of train, leaving nothing to train on; "
                "lower them so that their sum is below 1"
            )
        return self

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
        chat = self.messages_column is not None
        if chat and (not lm or self.completion_column is not None):
            raise ValueError(
                "data.messages_column holds conversations for data.task=causal-lm, without "
                "data.completion_column (a conversation's assistant turns are its completions)"
            )
        if not chat and self.chat_template != "auto":
            raise ValueError(
                f"data.chat_template={self.chat_template} renders conversations: set "
                "data.messages_column to the column that holds them"
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

    unfreeze_every: int | float | None = None
    """For `gradual-unfreezing`: optimizer steps between unfreezing one more group from the
    top (an integer), or that fraction of all steps (a number between 0 and 1); null unfreezes
    them evenly so that every group trains by the middle of training."""

    lora: LoraConfig = Field(default_factory=LoraConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)

    @field_validator("unfreeze_every")
    @classmethod
    def _steps_or_fraction(cls, every: int | float | None) -> int | float | None:
        fraction = isinstance(every, float)
        if every is not None and (not 0 < every < 1 if fraction else every < 1):
            raise ValueError(
                f"strategy.unfreeze_every={every} is neither a whole number of optimizer steps "
                "(1 or more) nor a fraction of training (between 0 and 1); give one of those, "
                "or null to have every group train by the middle of training"
            )
        return every

    pooling: Literal["auto", "mean", "cls", "last"] = "auto"
    """How token states become one feature vector for feature extraction and the probe:
    `auto` is `last` for decoders and `mean` otherwise. Tagged words keep every token's
    state, so token-classification needs `auto`."""

    merge_adapter: bool | None = None
    """On export, merge a LoRA or IA3 adapter into the base weights (a plain transformers
    model); false exports the adapter alone. Unset merges where the method allows: a
    prompt-learning adapter (virtual tokens) cannot merge, so true is refused for it."""


class Config(Section):
    """A whole ftpipe run: data, model, strategy, training, sweep, registry and pipeline."""

    seed: int = 42
    """Seed for splits, shuffling, initialisation and the sweep."""

    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    @model_validator(mode="after")
    def _strategy_runs_at_zero_stage_and_merges(self) -> Config:
        name = self.strategy.name
        for problem in (
            zero_stage_problem(name, self.train.zero_stage),
            merge_problem(name, self.strategy.merge_adapter),
        ):
            if problem is not None:
                raise ValueError(problem)
        return self


def canonical_json(value: Any) -> str:
    """Serialise to canonical JSON: sorted keys, no whitespace, so equal values hash equally."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: Config) -> str:
    """Return the stable identity of a config: sha256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()
