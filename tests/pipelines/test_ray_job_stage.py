"""A stage submitted through the real Ray Jobs API of a local Ray, as on a KubeRay cluster."""

from __future__ import annotations

import json

import pytest

from ftpipe.errors import FtpipeError
from ftpipe.stage import Stage, run_stage
from ftpipe.train.ray_cluster import ensure_ray

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("own_ray")]


@pytest.fixture
def jobs_api() -> str:
    """The Jobs API of this process's local Ray (its dashboard, on 127.0.0.1)."""
    import ray

    ensure_ray(None)
    return f"http://{ray._private.worker.get_dashboard_url()}"


def test_prep_runs_as_a_ray_job_and_its_output_comes_back(
    tmp_path, tiny_pipeline_config, jobs_api, capfd
):
    local, remote = tmp_path / "prepared", tmp_path / "object-store/prepared"
    stage = Stage("prep", outputs={"data.output_dir": (str(local), str(remote))})
    run_stage(stage, str(tiny_pipeline_config), ray_address=jobs_api)

    # The job wrote to the "remote" location; the component's path got a copy.
    for directory in (remote, local):
        stats = json.loads((directory / "stats.json").read_text())
        assert sorted(stats["splits"]) == ["eval", "test", "train"]
        assert sum(split["rows"] for split in stats["splits"].values()) == 80
        assert (directory / "test").is_dir()  # the held-out split travels with the output
    assert "Tokenizing" in capfd.readouterr().out  # the job's log streamed here


def test_a_failing_ray_job_is_an_error_naming_the_job(tmp_path, tiny_pipeline_config, jobs_api):
    output = (str(tmp_path / "a"), str(tmp_path / "b"))
    stage = Stage("prep", overrides=["data.max_length=4"], outputs={"data.output_dir": output})
    with pytest.raises(FtpipeError, match=r"Ray job ftpipe-prep-.* ended FAILED"):
        run_stage(stage, str(tiny_pipeline_config), ray_address=jobs_api)
