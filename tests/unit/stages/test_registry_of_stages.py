"""Every stage of the DAG is one module with a `run`, found by name."""

from __future__ import annotations

import inspect

import pytest

from ftpipe.stages import NAMES, stage_run


@pytest.mark.parametrize("name", NAMES)
def test_each_stage_has_a_typed_run(name):
    run = stage_run(name)
    assert run.__module__ == f"ftpipe.stages.{name}"
    assert inspect.signature(run).return_annotation not in (inspect.Signature.empty, "None")


def test_an_unknown_stage_names_the_stages():
    with pytest.raises(KeyError, match="prep, recommend"):
        stage_run("deploy")
