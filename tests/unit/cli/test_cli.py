"""The `ftpipe` console script, run as a user runs it: a subprocess, exit codes, stderr."""

import json
from importlib.metadata import EntryPoint

import pytest
import typer
import yaml

from ftpipe import cli
from tests.helpers import REPO, balanced_rows, ftpipe, write_csv


def test_config_show_prints_resolved_yaml_with_hash():
    result = ftpipe("config", "show", "--config", "configs/demo.yaml", "data.max_length=32")
    assert result.returncode == 0, result.stderr
    first, _, body = result.stdout.partition("\n")
    assert first.startswith("# config hash: ") and len(first.split()[-1]) == 64
    shown = yaml.safe_load(body)
    assert shown["data"]["max_length"] == 32
    assert shown["train"]["lr"] == 2e-5  # defaults are filled in


def test_config_schema_is_json_schema():
    result = ftpipe("config", "schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) == {
        "seed",
        "data",
        "model",
        "strategy",
        "recommend",
        "train",
        "tune",
        "registry",
        "evaluate",
        "promote",
        "pipeline",
        "generate",
    }


def test_bad_config_exits_2_with_one_paragraph_and_no_traceback():
    result = ftpipe("prep", "--config", "configs/demo.yaml", "data.max_lenght=64")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown key `data.max_lenght`" in result.stderr
    assert "did you mean `max_length`" in result.stderr


def test_a_metric_the_task_does_not_report_exits_2_before_the_stage_runs():
    result = ftpipe("train", "--config", "configs/demo.yaml", "train.metric=perplexity")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "train.metric=perplexity is not reported for data.task=" in result.stderr
    assert "accuracy, macro_f1, loss or auto" in result.stderr


def prep_demo_config_on(train, out):
    """`ftpipe prep` with the demo config pointed at another file and output directory."""
    demo = str(REPO / "configs/demo.yaml")
    return ftpipe(
        "prep", "-c", demo, f"data.train={train}", f"data.output_dir={out}", cwd=out.parent
    )


def test_bad_row_exits_2_names_the_line_and_writes_nothing(tmp_path):
    train = write_csv(tmp_path / "train.csv", [*balanced_rows(5), ["   ", "good"]])
    out = tmp_path / "out"
    result = prep_demo_config_on(train, out)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{train} has 1 invalid row" in " ".join(result.stderr.split())
    assert "line 12" in result.stderr
    assert not out.exists()


def test_prep_prints_stats_and_where_it_wrote(tmp_path):
    train = write_csv(tmp_path / "train.csv", balanced_rows(20))
    out = tmp_path / "out"
    result = prep_demo_config_on(train, out)
    assert result.returncode == 0, result.stderr
    assert f"Wrote {out}" in result.stdout
    assert "data fingerprint" in result.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats["splits"]) == {"train", "eval", "test"}  # the demo holds out a test split
    assert sum(split["rows"] for split in stats["splits"].values()) == 40


def test_version():
    result = ftpipe("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("ftpipe ")


def test_user_text_with_brackets_prints_verbatim(tmp_path):
    rows = [[f"{label} text {i}", label] for i in range(5) for label in ("[positive]", "[/neg]")]
    train = write_csv(tmp_path / "in[red].csv", rows)
    out = tmp_path / "out"
    result = prep_demo_config_on(train, out)
    assert result.returncode == 0, result.stderr
    assert "[positive]" in result.stdout and "[/neg]" in result.stdout

    bad = write_csv(
        tmp_path / "bad[bold].csv", [*rows, ["[/x] odd", "[positive]"], ["[/x] odd", "[/neg]"]]
    )
    result = prep_demo_config_on(bad, tmp_path / "out2")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    flat = " ".join(result.stderr.split())
    assert "bad[bold].csv has 2 invalid rows" in flat
    assert "'[/x] odd' has conflicting labels" in flat


def test_the_pipeline_commands_join_through_the_entry_point():
    listed = ftpipe("--help")
    assert listed.returncode == 0, listed.stderr
    for command in ("run", "compile", "submit", "schedule"):
        assert f"│ {command} " in listed.stdout
    helped = ftpipe("schedule", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--cron" in helped.stdout and "--ray-address" in helped.stdout


def _registered(monkeypatch, *values: str) -> typer.Typer:
    """A fresh app, after registering the entry points `values` (module:function)."""
    entries = [EntryPoint(f"e{i}", value, cli.COMMANDS_GROUP) for i, value in enumerate(values)]
    monkeypatch.setattr(cli, "entry_points", lambda group: entries)
    app = typer.Typer()
    cli.add_registered_commands(app)
    return app


def test_an_entry_point_whose_module_is_not_installed_is_skipped(monkeypatch):
    app = _registered(monkeypatch, "ftpipe_no_such_plugin.cli:register", "pipelines.cli:register")
    names = [command.callback.__name__ for command in app.registered_commands]
    assert names == ["run", "compile_command", "submit", "schedule"]


def test_an_installed_plugin_missing_a_dependency_fails_loudly(monkeypatch, tmp_path):
    (tmp_path / "ftpipe_broken_plugin.py").write_text("import ftpipe_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="ftpipe_no_such_dependency"):
        _registered(monkeypatch, "ftpipe_broken_plugin:register")
