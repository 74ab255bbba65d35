"""stats.json: what the data looks like to the model, split by split."""

from __future__ import annotations

from typing import Any

import numpy as np

from ftpipe.data.scan import Index
from ftpipe.data.tokenize import TokenCounts
from ftpipe.tasks.labels import LabelMap

PERCENTILES = (50, 90, 95, 99)


def split_stats(
    rows: Index, tokens: TokenCounts, labels: LabelMap | None, max_length: int
) -> dict[str, Any]:
    """Rows per label, token-length percentiles, truncation and domain-shift signals.

    The unknown-token rate and word pieces per word are signals of domain shift: text far from
    the pretraining corpus splits into more pieces and hits the unknown token more often.
    """
    counts = rows.label_counts()
    lengths = tokens.all_lengths
    token_length: dict[str, float] = {}
    if len(lengths):
        token_length = {f"p{p}": _round(np.percentile(lengths, p)) for p in PERCENTILES}
        token_length |= {"mean": _round(lengths.mean()), "max": int(lengths.max())}
    return {
        "rows": len(rows),
        "rows_per_label": {name: counts.get(name, 0) for name in labels.names} if labels else {},
        "dropped": dict(sorted(rows.dropped.items())),
        "token_length": token_length,
        "truncated_share": _round(float(np.mean(lengths > max_length)) if len(lengths) else 0.0),
        "unknown_token_rate": _round(tokens.unknown / max(tokens.pieces, 1)),
        "pieces_per_word": _round(tokens.pieces / max(tokens.words, 1)),
    }


def _round(value: float) -> float:
    # Rounded so stats.json is byte-identical across runs and readable.
    return round(float(value), 6)
