"""The promote stage: the gate decides whether the challenger becomes `champion`."""

from __future__ import annotations

from pathlib import Path

from ftpipe.config import Config
from ftpipe.registry.promote import Promotion, promote, write_decision


def run(
    config: Config,
    version: str | None = None,
    dry_run: bool = False,
    output: str | Path | None = None,
) -> Promotion:
    """Gate `version` (default: the `challenger` alias) and move the alias if it passes.

    Args:
        config: The run's config (registry and promote sections).
        version: The version to gate.
        dry_run: Decide, but record and move nothing.
        output: Also write the outcome as JSON here.
    """
    result = promote(config, version, dry_run=dry_run)
    if output is not None:
        write_decision(result, Path(output))
    return result
