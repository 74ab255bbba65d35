"""The config schema: one frozen, typed object per run.

Each field's docstring is its help text: it shows in `ftpipe config schema` and in error
messages, so it is written for the user. Sections map one-to-one to pipeline stages; this
module holds the model and strategy sections and the `Config` that joins them all,
`ftpipe.config.data` the data section, and `ftpipe.config.sections` the others.
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

from ftpipe.config.base import Section, StrategyName
from ftpipe.config.data import DataConfig
from ftpipe.config.generation import GenerateConfig
from ftpipe.config.rules import merge_problem, packing_problem, zero_stage_problem
from ftpipe.config.sections import (
    EvaluateConfig,
    PipelineConfig,
    PromoteConfig,
    RecommendConfig,
    RegistryConfig,
    TuneConfig,
)
from ftpipe.config.train import TrainConfig


class ModelConfig(Section):
    """The pretrained base model."""

    name: str = "all-MiniLM-L6-v2"
    """Base model: the built-in alias `all-MiniLM-L6-v2` (packaged, works offline), a local
    directory, or a Hugging Face Hub id."""

    revision: str | None = None
    """Hub revision (branch, tag or commit) to pin; ignored for local directories."""

    offline: bool = True
    """Forbid Hugging Face Hub downloads (sets HF_HUB_OFFLINE=1 for the run and its Ray workers):
    the model, and `hf:` data, must be local or already in the Hub cache (HF_HOME). false lets
    the run download them, authenticated by HF_TOKEN from the environment when set."""


class LoraConfig(Section):
    """LoRA adapter settings (strategies `lora` and `qlora`)."""

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
    """Virtual-token settings (`prefix`, `p-tuning-v2`, `p-tuning`, `prompt-tuning`)."""

    num_virtual_tokens: int = Field(default=20, ge=1)
    """Learned tokens prepended to every input."""

    encoder_hidden_size: int = Field(default=128, ge=1)
    """Hidden size of the p-tuning prompt encoder, and the width of p-tuning v2's prefix
    projection (the MLP that makes each layer's keys and values from the virtual tokens)."""


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
    prompt-learning adapter (virtual tokens) and a qlora adapter (on 4-bit weights) cannot
    merge, so true is refused for them."""


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
    generate: GenerateConfig = Field(default_factory=GenerateConfig)

    @model_validator(mode="after")
    def _strategy_runs_at_zero_stage_and_merges(self) -> Config:
        name = self.strategy.name
        for problem in (
            zero_stage_problem(name, self.train.zero_stage),
            merge_problem(name, self.strategy.merge_adapter),
            packing_problem(name, self.data.packing),
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
