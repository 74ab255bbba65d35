"""`ftpipe prep` on the real GLUE SST-2 files, with counts checked against an independent
count of the raw files. Skipped where ../shared/data/sst2 is absent."""

import json
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest

from tests.helpers import SST2, ftpipe, needs_sst2

pytestmark = [pytest.mark.integration, needs_sst2]


def raw_rows(name: str) -> list[tuple[int, str, str]]:
    """(line number, sentence, label) straight from the TSV, header skipped."""
    lines = (SST2 / name).read_text(encoding="utf-8").splitlines()
    return [(n, *line.split("\t")) for n, line in enumerate(lines[1:], start=2)]


def conflicting_texts(rows: list[tuple[int, str, str]]) -> set[str]:
    labels_of: dict[str, set[str]] = defaultdict(set)
    for _, text, label in rows:
        labels_of[text].add(label)
    return {t for t, labels in labels_of.items() if len(labels) > 1}


def expected_train_counts() -> tuple[Counter, int, int]:
    rows = raw_rows("train.tsv")
    conflicted = conflicting_texts(rows)
    seen: set[tuple[str, str]] = set()
    kept: Counter = Counter()
    duplicates = 0
    for _, text, label in rows:
        if text in conflicted:
            continue
        if (text, label) in seen:
            duplicates += 1
            continue
        seen.add((text, label))
        kept[label] += 1
    conflict_rows = sum(1 for _, text, _ in rows if text in conflicted)
    return kept, duplicates, conflict_rows


def test_prep_sst2_train_eval_and_dev_counts(tmp_path):
    out = tmp_path / "sst2"
    result = ftpipe("prep", "--config", "configs/sst2.yaml", f"data.output_dir={out}")
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())

    kept, duplicates, conflict_rows = expected_train_counts()
    # Train and eval (a stratified 2% of the kept training rows) share them; dev is the test.
    train, selection = stats["splits"]["train"], stats["splits"]["eval"]
    for label in ("0", "1"):
        shares = train["rows_per_label"][label], selection["rows_per_label"][label]
        assert sum(shares) == kept[label] and shares[1] == round(0.02 * kept[label])
    assert train["dropped"] == {"duplicate": duplicates, "conflicting_label": conflict_rows}
    assert (duplicates, conflict_rows) == (366, 10)  # the quirks the README documents
    assert selection["dropped"] == {}

    held_out = Counter(label for _, _, label in raw_rows("dev.tsv"))
    assert stats["splits"]["test"]["rows"] == 872
    assert stats["splits"]["test"]["rows_per_label"] == {"0": held_out["0"], "1": held_out["1"]}
    assert stats["splits"]["test"]["dropped"] == {}

    # The right rows went: no conflicting phrase is left and no text is kept twice.
    train_rows = pq.read_table(out / "train").to_pylist() + pq.read_table(out / "eval").to_pylist()
    texts = [row["text"] for row in train_rows]
    assert len(texts) == len(set(texts)) == sum(kept.values())
    assert conflicting_texts(raw_rows("train.tsv")).isdisjoint(texts)
    by_line = {f"line {n}": (text, label) for n, text, label in raw_rows("train.tsv")}
    assert all(by_line[r["location"]] == (r["text"], str(r["label"])) for r in train_rows)

    # The lower-cased, pre-tokenized GLUE text suits an uncased WordPiece vocabulary.
    assert 1.0 < train["pieces_per_word"] < 1.3
    assert train["unknown_token_rate"] < 0.001
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["fingerprint"] == stats["fingerprint"]
    assert fingerprint["inputs"]["train"]["sha256"] == (
        "c75796b01672b41c38cd4b35f4ff1ade88ca79b7577f3926e01ff69739d85ec9"
    )


def test_default_policy_fails_on_conflicting_labels_naming_the_lines(tmp_path):
    result = ftpipe(
        "prep",
        "--config",
        "configs/sst2.yaml",
        "data.on_error=fail",
        f"data.output_dir={tmp_path / 'out'}",
    )
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "train.tsv has 10 invalid rows (conflicting_label: 10)" in message
    assert "line 1435: text 'laughably' has conflicting labels" in message
    assert "data.on_error=drop" in message
    assert not (tmp_path / "out").exists()
