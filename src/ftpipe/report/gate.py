"""The register and gate sections: what was registered, and the promotion gate's decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftpipe.report.html import paragraph, table

EVIDENCE = ("metric", "split", "optimistic", "challenger", "champion", "ci_low", "ci_high")
"""The decision's numbers, in the order a reader checks them."""


def register_section(registered: Path, decision: Path | None = None) -> str:
    """registered.json in one sentence, and the gate's answer on that version, if known."""
    record = json.loads(Path(registered).read_text())
    reused = " (that export was registered before: its version is reused)" if record.get(
        "reused") else ""  # fmt: skip
    body = paragraph(
        f"Registered {record['name']} version {record['version']} from MLflow run "
        f"{record.get('run_id') or '?'}{reused}.",
        "verdict",
    )
    if record.get("orphans"):
        body += paragraph("Debris of killed registrations marked: " + ", ".join(record["orphans"]))
    if decision is not None:
        body += gate_section(decision)
    return body


def gate_section(decision: Path) -> str:
    """decision.json: the verdict and its reason, the evidence, each check, per-class changes."""
    outcome: dict[str, Any] = json.loads(Path(decision).read_text())
    found = outcome.get("decision")
    name, version = outcome["name"], outcome["version"]
    if not found:
        return paragraph(f"{name} version {version} already is the champion.", "verdict")
    verdict = "promote" if found["promote"] else "keep the champion"
    moved = (f" The champion alias moved from {outcome.get('champion_before') or 'none'} to "
             f"{outcome.get('champion_after')}." if outcome.get("changed") else "")  # fmt: skip
    body = (
        f'<p class="verdict {"good" if found["promote"] else "bad"}">'
        f"Gate on {name} version {version}: {verdict}.</p>"
    )
    body += paragraph(found.get("reason", "") + moved)
    evidence = [[key, found[key]] for key in EVIDENCE if found.get(key) is not None]
    body += table(["evidence", "value"], evidence)
    checks = found.get("checks") or {}
    if checks:
        body += "<h3>Checks</h3>" + table(
            ["check", "result"], [[k, "pass" if ok else "FAIL"] for k, ok in checks.items()]
        )
    deltas = found.get("class_f1_deltas") or {}
    if deltas:
        body += "<h3>F1 change per class (challenger minus champion)</h3>"
        body += table(["class", "F1 change"], sorted(deltas.items()))
    return body
