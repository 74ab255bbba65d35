"""The one typed, frozen config object that drives every stage."""

from ftpipe.config.load import apply_overrides, load_config
from ftpipe.config.schema import (
    Config,
    DataConfig,
    ModelConfig,
    PipelineConfig,
    RegistryConfig,
    StrategyConfig,
    TrainConfig,
    TuneConfig,
    canonical_json,
    config_hash,
)

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "PipelineConfig",
    "RegistryConfig",
    "StrategyConfig",
    "TrainConfig",
    "TuneConfig",
    "apply_overrides",
    "canonical_json",
    "config_hash",
    "load_config",
]
