"""The prep stage: load, validate, split and tokenize the data; stats and a fingerprint."""

from __future__ import annotations

from ftpipe.config import Config
from ftpipe.data.prep import PrepResult, run_prep


def run(config: Config) -> PrepResult:
    """Write `data.output_dir` (see `ftpipe.data.prep`) and return where, with its stats."""
    return run_prep(config)
