"""The prep stage: load, validate, split and tokenize the data; stats and a fingerprint."""

from __future__ import annotations

from ftpipe.config import Config
from ftpipe.data.prep import PrepResult, run_prep
from ftpipe.stages import check_config


def run(config: Config) -> PrepResult:
    """Write `data.output_dir` (see `ftpipe.data.prep`) and return where, with its stats.

    The pipeline's first stage also checks the settings the task must honour later (the
    checkpoint and promotion metrics), so a typo fails now rather than after training.
    """
    return run_prep(check_config(config))
