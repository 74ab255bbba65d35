"""Data preparation: load, validate, split, tokenize, stats and fingerprint."""

from ftpipe.data.prep import PrepResult, run_prep

__all__ = ["PrepResult", "run_prep"]
