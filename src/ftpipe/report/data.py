"""The data section: rows per split and class, the rows dropped and why, token lengths."""

from __future__ import annotations

from pathlib import Path

from ftpipe.data.prepared import PrepDir
from ftpipe.data.stats import counts_per_label
from ftpipe.report.html import paragraph, table


def data_section(prep_dir: Path) -> str:
    """Prep's stats.json as tables: each split's rows, drops, token lengths; rows per class."""
    stats = PrepDir(prep_dir).stats
    splits = stats["splits"]
    body = paragraph(
        f"Task {stats.get('task', 'sequence-classification')}, tokenizer of {stats['model']}, "
        f"max_length {stats['max_length']}. Data fingerprint {stats['fingerprint'][:12]}."
    )
    rows = []
    for name, split in splits.items():
        lengths = split.get("token_length", {})
        rows.append([
            name, split["rows"], sum(split.get("dropped", {}).values()),
            lengths.get("mean"), lengths.get("p50"), lengths.get("p95"), lengths.get("max"),
            f"{split.get('truncated_share', 0):.1%}", f"{split.get('unknown_token_rate', 0):.2%}",
        ])  # fmt: skip
    body += table(["split", "rows", "dropped", "mean tokens", "p50", "p95", "max", "truncated",
                   "unknown tokens"], rows)  # fmt: skip
    drops = [[name, reason, count] for name, split in splits.items()
             for reason, count in sorted(split.get("dropped", {}).items())]  # fmt: skip
    if drops:
        body += "<h3>Rows dropped</h3>" + table(["split", "reason", "rows"], drops)
    title, counts = counts_per_label(stats)
    if counts:
        body += f"<h3>{title.capitalize()}</h3>"
        body += table([title.split()[-1], *splits], [[label, *n] for label, n in counts])
    return body
