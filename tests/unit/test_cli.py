"""The `ftpipe` console script, run as a user runs it: a subprocess, exit codes, stderr."""

import json

import yaml

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
        "train",
        "tune",
        "registry",
        "pipeline",
    }


def test_bad_config_exits_2_with_one_paragraph_and_no_traceback():
    result = ftpipe("prep", "--config", "configs/demo.yaml", "data.max_lenght=64")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown key `data.max_lenght`" in result.stderr
    assert "did you mean `max_length`" in result.stderr


def test_bad_row_exits_2_names_the_line_and_writes_nothing(tmp_path):
    train = write_csv(tmp_path / "train.csv", [*balanced_rows(5), ["   ", "good"]])
    out = tmp_path / "out"
    result = ftpipe(
        "prep",
        "-c",
        str(REPO / "configs/demo.yaml"),
        f"data.train={train}",
        f"data.output_dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{train} has 1 invalid rows" in " ".join(result.stderr.split())
    assert "line 12" in result.stderr
    assert not out.exists()


def test_prep_prints_stats_and_where_it_wrote(tmp_path):
    train = write_csv(tmp_path / "train.csv", balanced_rows(20))
    out = tmp_path / "out"
    result = ftpipe(
        "prep",
        "-c",
        str(REPO / "configs/demo.yaml"),
        f"data.train={train}",
        f"data.output_dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"Wrote {out}" in result.stdout
    assert "data fingerprint" in result.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert stats["splits"]["train"]["rows"] + stats["splits"]["eval"]["rows"] == 40


def test_version():
    result = ftpipe("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("ftpipe ")
