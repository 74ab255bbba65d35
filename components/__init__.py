"""One KFP component per pipeline stage.

Each component is a thin function: it imports ftpipe inside its body (KFP ships the body
alone into the stage's container), names the `ftpipe` command of its stage and the config
keys its artifacts fill, and leaves every decision to that command. Files travel as
artifacts (Dataset, Model, Metrics, Markdown, HTML) so the KFP UI shows them; small values
travel as typed parameters.

The functions are plain Python, so tests call them directly; `component` turns one into a
KFP component with the image the config names (pipelines/finetune.py does that per stage).
"""

from __future__ import annotations

from collections.abc import Callable

from kfp import dsl


def component(func: Callable, image: str) -> dsl.component:
    """`func` as a KFP component running in `image` (which must have ftpipe installed)."""
    return dsl.component(func, base_image=image)
