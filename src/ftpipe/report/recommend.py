"""The recommendation section: the strategy recommend picked, and why."""

from __future__ import annotations

import json
from pathlib import Path

from ftpipe.report.html import esc, paragraph, table


def recommendation_section(recommend_dir: Path) -> str:
    """recommendation.json as the verdict, its reasons, the learning rates and search space."""
    picked = json.loads((Path(recommend_dir) / "recommendation.json").read_text())
    case = str(picked.get("case", "")).replace("-", " and ")
    body = paragraph(f"Strategy: {picked['strategy']}" + (f" ({case})." if case else "."),
                     "verdict")  # fmt: skip
    reasons = "".join(f"<li>{esc(reason)}</li>" for reason in picked.get("reasons", []))
    if reasons:
        body += f"<ul>{reasons}</ul>"
    ranges = [(name, picked.get(f"{key}_range")) for name, key in
              (("backbone", "lr"), ("head", "head_lr"))]  # fmt: skip
    shown = [f"{name} {low:.0e} to {high:.0e}" for name, (low, high) in
             ((n, r) for n, r in ranges if r)]  # fmt: skip
    if shown:
        body += paragraph("Learning rates: " + ", ".join(shown) + ".")
    space = picked.get("search_space") or {}
    if space:
        body += "<h3>Suggested search space</h3>" + table(["key", "values"], sorted(space.items()))
    measured = {k: v for k, v in (picked.get("measurements") or {}).items()
                if v is not None and not isinstance(v, dict | list)}  # fmt: skip
    if measured:
        body += "<h3>Measurements</h3>" + table(["measure", "value"], sorted(measured.items()))
    return body
