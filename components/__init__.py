"""One KFP component per pipeline stage.

Each component is a thin function: it imports ftpipe inside its body (KFP ships the body
alone into the stage's container, whose image has ftpipe but not this package), names the
stage (`ftpipe.stages`) it runs and the config keys its artifacts fill, and leaves every
decision to that stage. Files travel as artifacts (Dataset, Model, Metrics, Markdown, HTML)
so the KFP UI shows them; small values travel as typed parameters.

The functions are plain Python, so tests call them directly; `component` turns one into a
KFP component with the image the config names (pipelines/finetune.py does that per stage), and
ships the helpers below with it, so a body may call them by name.
"""

from __future__ import annotations

from collections.abc import Callable

from kfp import dsl


def tracking_overrides(mlflow_uri: str) -> list[str]:
    """The stage's config override for the pipeline's `mlflow_uri`: none when it is empty.

    Args:
        mlflow_uri: The pipeline's MLflow URI; empty keeps the config's registry.tracking_uri.

    Returns:
        The config override to append to the stage's overrides.
    """
    return [f"registry.tracking_uri={mlflow_uri}"] if mlflow_uri else []


def component(func: Callable, image: str) -> dsl.component:
    """`func` as a KFP component running in `image` (which must have ftpipe installed)."""
    return dsl.component(func, base_image=image, additional_funcs=[tracking_overrides])
