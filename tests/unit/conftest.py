"""Unit fixtures shared across packages: tiny models trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    """Train two tiny models once: full fine-tuning, and LoRA merged on export.

    Returns a function from strategy ("full" or "lora") to (config, export directory).
    """
    from ftpipe.train.local import train_local
    from tests.helpers import train_config

    runs = {}
    for strategy, extra in (("full", ()), ("lora", ("strategy.merge_adapter=true",))):
        root = tmp_path_factory.mktemp(f"trained-{strategy}")
        config = train_config(root, tiny_model_dir, f"strategy.name={strategy}", *extra)
        runs[strategy] = (config, Path(train_local(config).model_dir))
    return runs.__getitem__
