"""Helpers for writing test inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"
needs_sst2 = pytest.mark.skipif(
    not (SST2 / "train.tsv").exists(),
    reason=f"GLUE SST-2 not found at {SST2}: these tests need ../shared/data/sst2 beside the repo",
)


def write_csv(path: Path, rows: list[list[Any]], header: list[str] | None = ("text", "label"),
              delimiter: str = ",") -> Path:
    """Write rows with an optional header: CSV with RFC 4180 quoting, TSV literally (as GLUE)."""
    lines = ([list(header)] if header is not None else []) + [list(r) for r in rows]
    with path.open("w", newline="", encoding="utf-8") as handle:
        if delimiter == "\t":
            handle.writelines("\t".join(map(str, line)) + "\n" for line in lines)
        else:
            csv.writer(handle, delimiter=delimiter, lineterminator="\n").writerows(lines)
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write one JSON object per line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def balanced_rows(n_per_class: int = 10, labels: tuple[str, ...] = ("good", "bad")) -> list[list[str]]:
    """Distinct texts, n per label, interleaved."""
    return [
        [f"{label} example number {i}", label]
        for i in range(n_per_class)
        for label in labels
    ]
