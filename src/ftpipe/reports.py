"""Short Markdown and HTML pages of each stage's outputs, for the Kubeflow UI.

A pipeline component writes these beside its artifacts so that the run's page shows the data
statistics, the recommendation, the sweep plots, the evaluation and the promotion decision
without anyone downloading a file.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd

from ftpipe.data.prepared import PrepDir
from ftpipe.data.stats import counts_per_label


def prep_report(prep_dir: Path) -> str:
    """Rows per split and label (entities per type for tagged words), token lengths, fingerprint."""
    stats = PrepDir(prep_dir).stats
    lines = [f"# Prepared data `{stats['fingerprint'][:12]}`", "",
             f"Model {stats['model']}, max_length {stats['max_length']}.", "",
             "| split | rows | p95 tokens | truncated | unknown tokens |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, split in stats["splits"].items():
        lines.append(
            f"| {name} | {split['rows']:,} | {split['token_length'].get('p95', 0):.0f} | "
            f"{split['truncated_share']:.1%} | {split['unknown_token_rate']:.2%} |"
        )
    title, counts = counts_per_label(stats)
    if counts:
        lines += ["", f"| {title.split()[-1]} | " + " | ".join(stats["splits"]) + " |",
                  "| --- |" + " ---: |" * len(stats["splits"])]  # fmt: skip
        for label, per_split in counts:
            lines.append(f"| {label} | " + " | ".join(f"{n:,}" for n in per_split) + " |")
    return "\n".join(lines) + "\n"


def text_report(title: str, path: Path) -> str:
    """A text file (the recommendation's explanation) as a Markdown page."""
    return f"# {title}\n\n```\n{path.read_text().rstrip()}\n```\n"


def sweep_report(sweep_dir: Path) -> str:
    """The sweep's trials table and its plots, as one self-contained HTML page."""
    best = json.loads((sweep_dir / "best.json").read_text())
    table = pd.read_csv(sweep_dir / "results.csv").to_html(
        index=False, float_format="{:.4f}".format
    )
    images = "".join(
        f'<img alt="{png.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(png.read_bytes()).decode()}" width="560">'
        for png in sorted(sweep_dir.glob("*.png"))
    )
    summary = json.dumps(best, indent=2, default=str)
    return (
        f"<html><body><h1>Sweep {sweep_dir.name}</h1><pre>{summary}</pre>{images}{table}"
        "</body></html>\n"
    )


def decision_report(decision_file: Path) -> str:
    """The promotion gate's decision and its evidence."""
    outcome = json.loads(decision_file.read_text())
    decision = outcome.get("decision") or {}
    verdict = "promote" if decision.get("promote") else "keep the champion"
    lines = [f"# Gate: {outcome['name']} v{outcome['version']}: {verdict}", "",
             decision.get("reason", "The version already is champion."), "",
             "| evidence | value |", "| --- | ---: |"]  # fmt: skip
    for key in ("split", "optimistic", "metric", "challenger", "champion", "ci_low", "ci_high"):
        if decision.get(key) is not None:
            lines.append(f"| {key} | {decision[key]} |")
    for check, passed in decision.get("checks", {}).items():
        lines.append(f"| check: {check} | {'pass' if passed else 'FAIL'} |")
    return "\n".join(lines) + "\n"
