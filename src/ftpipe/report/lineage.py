"""The lineage section: what this model came from, as recorded on disk by the stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftpipe.config import config_hash, load_config
from ftpipe.report.files import RunFiles
from ftpipe.report.html import table
from ftpipe.train.outcome import RECORD


def lineage_rows(files: RunFiles) -> list[list[Any]]:
    """(what, value) pairs: run, data, config, base model, sweep, training run, version."""
    rows: list[list[Any]] = [["pipeline run", files.root.name]]
    if files.prep is not None:
        rows.append(["data fingerprint", _json(files.prep / "stats.json")["fingerprint"]])
    model = files.train / "model" if files.train is not None else None
    if model is not None and (model / "config.yaml").is_file():
        rows.append(["config hash", config_hash(load_config(model / "config.yaml"))])
    if model is not None and (model / "ftpipe.json").is_file():
        manifest = _json(model / "ftpipe.json")
        rows += [["task", manifest.get("task")], ["base model", manifest.get("base_model")],
                 ["base model revision", manifest.get("base_model_revision")],
                 ["strategy", manifest.get("strategy")]]  # fmt: skip
    if files.sweep is not None:
        rows.append(["sweep", files.sweep.name])
    if files.train is not None and (files.train / RECORD).is_file():
        record = _json(files.train / RECORD)
        rows += [["training run (MLflow)", record.get("run_id")],
                 ["tracking URI", record.get("tracking_uri")]]  # fmt: skip
    if files.registered is not None:
        registered = _json(files.registered)
        rows.append(["registered version", f"{registered['name']} v{registered['version']}"])
    return [row for row in rows if row[1] is not None]


def lineage_section(files: RunFiles) -> str:
    """The lineage as a two-column table."""
    return table(["what", "value"], lineage_rows(files))


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
