"""stats.json: what the data looks like to the model, split by split."""

from __future__ import annotations

from typing import Any

import numpy as np

from ftpipe.data.scan import Index
from ftpipe.data.tokenize import TokenCounts
from ftpipe.tasks import LabelMap, Task

PERCENTILES = (50, 90, 95, 99)


def split_stats(
    rows: Index, tokens: TokenCounts, labels: LabelMap | None, max_length: int, task: Task
) -> dict[str, Any]:
    """Rows per label, token-length percentiles, truncation and domain-shift signals.

    The unknown-token rate and word pieces per word are signals of domain shift: text far from
    the pretraining corpus splits into more pieces and hits the unknown token more often. For
    tagged words, words per tag and entities per type instead of rows per label, and the rows
    that long sentences added as windows or the words truncation cut off. For prompt +
    completion rows, those whose prompt was trimmed to fit and those whose completion was cut.
    """
    counts = rows.label_counts()
    by_label = task.label_stats(counts, labels) if labels else {"rows_per_label": {}}
    if task.pretokenized:
        by_label |= {
            "tag_scheme": rows.scheme,
            "repaired_tags": rows.repaired,
            "windows": tokens.windows,
            "lost_words": tokens.lost_words,
        }
    if task.ends_completions:
        by_label |= {
            "trimmed_prompts": tokens.trimmed_prompts,
            "cut_completions": tokens.cut_completions,
        }
    lengths = tokens.all_lengths
    token_length: dict[str, float] = {}
    if len(lengths):
        token_length = {f"p{p}": _round(np.percentile(lengths, p)) for p in PERCENTILES}
        token_length |= {"mean": _round(lengths.mean()), "max": int(lengths.max())}
    return {
        "rows": len(rows),
        **by_label,
        "dropped": dict(sorted(rows.dropped.items())),
        "token_length": token_length,
        "truncated_share": _round(float(np.mean(lengths > max_length)) if len(lengths) else 0.0),
        "unknown_token_rate": _round(tokens.unknown / max(tokens.pieces, 1)),
        "pieces_per_word": _round(tokens.pieces / max(tokens.words, 1)),
    }


def _round(value: float) -> float:
    # Rounded so stats.json is byte-identical across runs and readable.
    return round(float(value), 6)


def counts_per_label(stats: dict[str, Any]) -> tuple[str, list[tuple[str, list[int]]]]:
    """What stats.json counts per label, for tables: its title, and each label's count per split.

    Rows per label for labelled rows; entities per type for tagged words.
    """
    splits = list(stats["splits"].values())
    key, title = "rows_per_label", "rows per label"
    if splits and "entities_per_type" in splits[0]:
        key, title = "entities_per_type", "entities per type"
    labels = sorted({label for split in splits for label in split.get(key, {})}, key=str)
    if key == "rows_per_label":
        labels = [label for label in stats["labels"] if label in labels]
    return title, [(label, [split[key].get(label, 0) for split in splits]) for label in labels]
