"""The run report from a run's files: found in either layout, every section, self-contained."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ftpipe.errors import DataError
from ftpipe.report import REPORT, run_report, stage_report, write_run_report
from ftpipe.report.files import RunFiles
from tests.helpers import ftpipe
from tests.unit.report.conftest import RUN, write_run


def section_ids(html: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', html)


@pytest.mark.parametrize("layout", ["sequential", "kfp"])
def test_each_stage_output_is_found_by_its_files_in_either_layout(tmp_path, layout):
    run = write_run(tmp_path, layout)
    files = RunFiles.find(run)
    assert files.prep is not None and (files.prep / "stats.json").is_file()
    assert files.sweep is not None and files.sweep.name == "sweep-a6f3b042a3"
    # Ray's result.json inside a trial folder is not the training outcome.
    assert files.train is not None and files.train.name == "train"
    assert files.evaluate is not None and (files.evaluate / "evaluation.json").is_file()
    assert files.registered is not None and files.decision is not None


def test_a_cached_rerun_reports_the_replayed_stages_from_the_run_that_made_them(tmp_path):
    # A rerun through the KFP local runner: its cache replayed prep .. evaluate, whose outputs
    # stay in the first run's task folders; register and promote ran again in the new one.
    first = write_run(tmp_path / "first", "kfp")
    rerun = tmp_path / "rerun"
    for task in ("register", "promote"):
        shutil.copytree(first / task, rerun / task)
    replayed = [first / task for task in ("prep", "recommend", "tune", "train", "evaluate")]
    assert section_ids(run_report(rerun)) == ["register", "lineage"]
    files = RunFiles.find(rerun, replayed)
    assert files.prep == first / "prep/prepared" and files.registered.is_relative_to(rerun)
    assert section_ids(write_run_report(rerun, replayed).read_text()) == [
        "data",
        "recommendation",
        "sweep",
        "training",
        "evaluation",
        "register",
        "lineage",
    ]


def test_the_report_has_every_section_in_stage_order_and_nothing_external(run_dir):
    path = write_run_report(run_dir)
    html = path.read_text()
    assert path == run_dir / REPORT
    assert section_ids(html) == ["data", "recommendation", "sweep", "training", "evaluation",
                                 "register", "lineage"]  # fmt: skip
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<style>" in html and 'src="data:image/png;base64,' in html
    # The sweep's trials are named by Ray's id, not by their folder's absolute path.
    assert str(run_dir) not in html.split('id="sweep"')[1].split("</section>")[0]


def test_a_run_still_going_reports_the_stages_done_so_far(run_dir):
    for stage in ("tune", "train", "evaluate", "register", "promote"):
        shutil.rmtree(run_dir / stage)
    assert section_ids(run_report(run_dir)) == ["data", "recommendation", "lineage"]


def test_a_folder_without_a_run_is_an_error_naming_what_to_pass(tmp_path):
    with pytest.raises(DataError, match=re.escape("pipeline.local_root/<run name>")):
        run_report(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        run_report(tmp_path / "missing")


def test_a_stage_page_is_its_section_alone_in_the_same_style(run_dir):
    html = stage_report("data", run_dir / "prep")
    assert section_ids(html) == ["data"]
    assert html.startswith("<!DOCTYPE html>") and "max-width: 1200px" in html


def test_ftpipe_report_writes_the_report_and_says_where(tmp_path):
    run = write_run(tmp_path, "kfp")
    result = ftpipe("report", str(run))
    assert result.returncode == 0, result.stderr
    assert (run / REPORT).is_file() and REPORT in result.stdout


def test_the_lineage_names_the_run_data_model_and_version(run_dir):
    html = run_report(run_dir).split('id="lineage"')[1]
    for value in (RUN, "8e7fc34e7ce5", "tiny-bert", "freeze", "b3ecc165", "tiny v3"):
        assert value in html


def test_text_from_the_data_is_escaped(run_dir):
    html = run_report(Path(run_dir))
    assert "<b>row 0</b>" not in html and "&lt;b&gt;row 0&lt;/b&gt;" in html
