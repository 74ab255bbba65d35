"""The sweep section: the best trial, every trial (stopped and failed ones too), the plots."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from ftpipe.report.html import image, paragraph, table

_TRIAL_ID = re.compile(r"_trial_([0-9a-f]+_\d+)")
"""Ray's trial id inside a trial folder's name (`_trial_d723a_00000_0_train_lr=..._<time>`)."""

PLOTS = (("metric_vs_lr.png", "Best metric against learning rate"),
         ("trials.png", "Each trial's metric over training"))  # fmt: skip
"""The sweep's figures (written by ftpipe.tune.report) and their captions."""


def sweep_section(sweep_dir: Path) -> str:
    """best.json's winner, results.csv as a table, and the sweep's plots."""
    sweep_dir = Path(sweep_dir)
    best = json.loads((sweep_dir / "best.json").read_text())
    sampled = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}"
                        for k, v in sorted((best.get("config") or {}).items()))  # fmt: skip
    body = paragraph(
        f"Sweep {sweep_dir.name}: best {best['metric']} {best['best']:.4f}"
        + (f" with {sampled}." if sampled else "."),
        "verdict",
    )
    results = sweep_dir / "results.csv"
    if results.is_file():
        trials = pd.read_csv(results)
        trials["trial"] = [short_trial(name) for name in trials["trial"]]
        trials = trials.astype(object).where(trials.notna(), None)
        body += paragraph(f"{len(trials)} trial{'s' if len(trials) != 1 else ''}.") + table(
            list(trials.columns), trials.itertuples(index=False)
        )
    for name, caption in PLOTS:
        if (sweep_dir / name).is_file():
            body += image(sweep_dir / name, caption)
    return body


def short_trial(folder: str) -> str:
    """Ray's trial id ("d723a_00000") from a trial folder's name, else the name itself."""
    found = _TRIAL_ID.search(str(folder))
    return found.group(1) if found else str(folder)
