"""How causal LMs generate: in evaluation, in `ftpipe predict` and in the served model."""

from __future__ import annotations

from pydantic import Field

from ftpipe.config.base import Section


class GenerateConfig(Section):
    """Generation settings for causal LMs (`data.task: causal-lm`); greedy by default."""

    max_new_tokens: int = Field(default=64, ge=1, le=8192)
    """Most tokens generated per prompt; generation also stops at the tokenizer's EOS."""

    do_sample: bool = False
    """Sample the next token instead of taking the most likely one (greedy)."""

    temperature: float = Field(default=1.0, gt=0.0)
    """Sampling temperature (with `do_sample`)."""

    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches this."""

    batch_size: int = Field(default=8, ge=1)
    """Prompts generated at once (left-padded)."""
