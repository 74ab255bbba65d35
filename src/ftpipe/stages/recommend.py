"""The recommend stage: measure data size and similarity, recommend a strategy."""

from __future__ import annotations

from ftpipe.config import Config
from ftpipe.strategies.recommend import Recommendation, run_recommend


def run(config: Config) -> Recommendation:
    """Write recommendation.json and recommendation.txt under `recommend.output_dir`."""
    return run_recommend(config)
