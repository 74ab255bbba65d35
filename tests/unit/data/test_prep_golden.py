# ruff: noqa: E501
"""Prep's outputs stay byte-identical: sha256 of every file, recorded before streaming reads.

The hashes below were recorded from the whole-file reader (before issue 20's streaming prep)
on fixed generated inputs; prep must keep writing exactly these bytes. `causal_lm` was
recorded again when completions began to end with EOS and over-long rows to lose their
prompt's start rather than its end (prep layout 2): its rows within `max_length` kept their
bytes, the 36 longer ones changed, and stats.json gained the counts.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.words import WORDS
from ftpipe.data import run_prep
from tests.helpers import write_csv

GOLDEN_WORDS = WORDS[:15]
"""The words the recorded inputs were generated from."""


def _rows(n: int, seed: int, labels: tuple[str, ...] = ("good", "bad", "meh")) -> list[list]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(GOLDEN_WORDS) for _ in range(rng.randint(1, 14)))
        rows.append([f"{text} {i % 97}", rng.choice(labels)])
    # Quirks the checks must handle: exact duplicates, conflicts, empties, long rows.
    rows += [rows[3], rows[5], rows[5], [rows[7][0], "other" if rows[7][1] != "other" else "x"]]
    rows += [["   ", "good"], ["late " * 40, "bad"], ["", "meh"]]
    return rows


def _write_inputs(root: Path) -> None:
    rows = _rows(600, 1)
    write_csv(root / "train.csv", rows)
    pairs = [[t, f"pair {j % 13} {t[:9]}", lab] for j, (t, lab) in enumerate(_rows(300, 2))]
    write_csv(root / "pairs.csv", pairs, header=("premise", "hypothesis", "label"))
    held = [[t, p, lab] for t, p, lab in pairs[:20]] + [
        [t, f"other {i}", lab] for i, (t, lab) in enumerate(_rows(60, 3))
    ]
    write_csv(root / "pairs_eval.csv", held, header=("premise", "hypothesis", "label"))
    records = [{"text": t, "label": lab} for t, lab in _rows(250, 4)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    evals = [{"text": t, "label": lab} for t, lab in _rows(40, 5)] + records[:3]
    (root / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    write_csv(root / "train.tsv", _rows(200, 6), header=None, delimiter="\t")
    table = pa.table(
        {"text": [r[0] for r in _rows(200, 7)], "label": [r[1] for r in _rows(200, 7)]}
    )
    pq.write_table(table, root / "train.parquet")
    with gzip.GzipFile(root / "train.csv.gz", "wb", mtime=0) as handle:
        handle.write((root / "train.csv").read_bytes())
    lm = [{"prompt": t, "answer": f"answer {lab}"} for t, lab in _rows(150, 8)]
    (root / "lm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lm))


CASES: dict[str, dict] = {
    "csv_split": {"train": "train.csv", "on_error": "drop", "shard_rows": 97},
    "csv_gz_keep": {"train": "train.csv.gz", "on_error": "drop", "duplicates": "keep",
                    "max_train_rows": 300, "max_eval_rows": 30},
    "pairs_eval": {"train": "pairs.csv", "eval": "pairs_eval.csv", "text_column": "premise",
                   "text_pair_column": "hypothesis", "on_error": "drop", "shard_rows": 64},
    "jsonl_eval": {"train": "train.jsonl", "eval": "eval.jsonl", "on_error": "drop",
                   "labels": ["good", "bad", "meh"]},
    "tsv_noheader": {"train": "train.tsv", "has_header": False, "text_column": 0,
                     "label_column": 1, "on_error": "drop", "eval_fraction": 0.25},
    "parquet": {"train": "train.parquet", "on_error": "drop"},
    "causal_lm": {"train": "lm.jsonl", "task": "causal-lm", "text_column": "prompt",
                  "completion_column": "answer", "on_error": "drop"},
}  # fmt: skip

GOLDEN: dict[str, dict[str, str]] = {
    "causal_lm": {
        "eval/part-00000.parquet": "81c28511768c772a264a137144787f47204d9240c53efcabb0452f6b1bd3092e",
        "fingerprint.json": "9298233b0fbd4a8ec45a735cd69b8c5a7fbbeb3617216615e8e60d752118e524",
        "stats.json": "9d236bb0b520aecd1d71c51ae8efe96c85ae400396a22afd16d1493ed5bbbc59",
        "train/part-00000.parquet": "77d7830faebcef6455040094f3893539c69bb6606b193f4329cc43ac5c94dcb0",
    },
    "csv_gz_keep": {
        "eval/part-00000.parquet": "ce4831298d955368c3275b5bac7e53d4ff0b917e125dfc4a5c1285a2859bce21",
        "fingerprint.json": "81ff5e0217cc87d822cf31d9f3323cb1350c3db94ecd9e451faf70e5ab53671b",
        "label_map.json": "cca35971a6c2c022b3f96f9bf2e688da59a9c9b9d7049b35520235303b69ec13",
        "stats.json": "97f0bc186c04ec0ada768dfd388fc3a945af4310996ba9ea91bae3a31e1f8dd1",
        "train/part-00000.parquet": "f9ef83b5bb14be891c36455e3e9ccd845d096adb62232aead85d4d165cac74ce",
    },
    "csv_split": {
        "eval/part-00000.parquet": "0fc8c96b7510effc21a9d8a63cfaf72487c98fb86ceb07251e50c8bc5b5df87a",
        "fingerprint.json": "9dc69679d031531ffd6cbaea9ed19810f4c4d0dcbbf2c7a70936526fd494c012",
        "label_map.json": "cca35971a6c2c022b3f96f9bf2e688da59a9c9b9d7049b35520235303b69ec13",
        "stats.json": "bff60c2888edebd53ecc44f710bbeb050cfadc27b262c77ea9e47ec1b9940564",
        "train/part-00000.parquet": "c2f142119f072c35ca39edb8e3028b1488ceaa01df7399416a8b86a5d8d0413c",
        "train/part-00001.parquet": "de198ca36a1f742b617454ae027dcf9b27408b32edc6891822ec7f7263753ab6",
        "train/part-00002.parquet": "e569352a9ae662f46d3efbad27349b6b0ab714fd4cbeadb5890ddd244bae3d98",
        "train/part-00003.parquet": "0dea16a832fe13baa6a8ff4246fc36fc703cbd2cf53e5b79dbec9caeab54e787",
        "train/part-00004.parquet": "69c196f460f416b6deb249f58ed26e40835537c8655e75e332749a691747d988",
        "train/part-00005.parquet": "f974aff2cf2acee1b4caf2dc8973ab1b63573a7e12f651bcd3474287efecd8ea",
    },
    "jsonl_eval": {
        "eval/part-00000.parquet": "e3ba1edc4981e37c805d30afa4b06186c6207015c06f2bc5dc78fc7a2b300c90",
        "fingerprint.json": "7ec7beb43fb7cdb29b0eaa0863d28b23440f1b3113c61c47c88f60b74524194b",
        "label_map.json": "aebb8bb01dbc3ca350ce0b614d74c301483dfe3c4c70aad6df9901fa952f9a31",
        "stats.json": "c6e21114e9bae2be82ad2301ea4fee9838dd2aaa2dc6da6495fd4f5ba5d2aa59",
        "train/part-00000.parquet": "cec31e80a359fd36f39957977b92cc6d9875c9ffa6714ad75a0f6321f8c6b9b8",
    },
    "pairs_eval": {
        "eval/part-00000.parquet": "e2b95fe74472bba6f36d18fe21b7ee327a843a88ad232929d16451e4ec18f2fa",
        "eval/part-00001.parquet": "7d65e427e050cdc9c9bfc8e48836fed7e2b4158c2f0a290d99850e1d0bc16395",
        "fingerprint.json": "078c00aee3b3d54d657a6be5d856d5a32cb40730fdcc8bb52b75cfeb253e4b7f",
        "label_map.json": "51e1cedc9a0710b147754e85d3098c6d01c73ffd2e0c67c2db54c7b1e17b41a7",
        "stats.json": "34b9a78bdfeb04572a2c686d3f2b22b75241240e55e726c2429680d5b11dc713",
        "train/part-00000.parquet": "8d57868e9ab504c191665679450e3de466d1651a6922dc008ed3853cd8c2d040",
        "train/part-00001.parquet": "5f2c30d702a266250fc7ea0feddaf8a38c229f8c829cf87961ce02fa43550c09",
        "train/part-00002.parquet": "8b000d56e39e23c5759f5bd138f50c3cc1623f7e678ced9750c5949287e28356",
        "train/part-00003.parquet": "a89214ff309e85735712f5456281c7f1e0af4263350559806df93361f73c51cc",
        "train/part-00004.parquet": "c0c8d0404d88f31e8b2f29d5185ed5cb03a19881888a728b816002f4524689ee",
    },
    "parquet": {
        "eval/part-00000.parquet": "f0afd355119f3022a8594adf91a7308d8205e0ff11b03035ae272c735f02b6bb",
        "fingerprint.json": "0740bc0c05e4b9fa195294d9a0577fd71367b034f0dd4f0d03da0e18cd7ae98a",
        "label_map.json": "cca35971a6c2c022b3f96f9bf2e688da59a9c9b9d7049b35520235303b69ec13",
        "stats.json": "68a271b3221c1b4c9d70d0d3e5b599cba03f230bd7fe5b5ab6df75ffc1195eca",
        "train/part-00000.parquet": "21366f2a3887e829026dfb0159c32ee4e634839f427d8b690216eef86b9dfac8",
    },
    "tsv_noheader": {
        "eval/part-00000.parquet": "b1aac14b5a2ee0012612d55f0c57ee5597c93384cb1dad6329b005ec2367cea6",
        "fingerprint.json": "32f83c235e3e4fc43d9fc8b22b1462e8d04171a4a3aba44417fbb855be0fb35a",
        "label_map.json": "cca35971a6c2c022b3f96f9bf2e688da59a9c9b9d7049b35520235303b69ec13",
        "stats.json": "e7a179bc6db371a038a6423024260b6b3899e53cc3c99a0868b8535766fbbcbc",
        "train/part-00000.parquet": "2af5494dd9834e8acec5b9bacb627e19fd92bf9dac0a1fd7bfa591ec1c9a26a4",
    },
}


def _digests(directory: Path, model_dir: Path) -> dict[str, str]:
    # stats.json and fingerprint.json name the model by its (per-session temporary) directory.
    return {
        str(p.relative_to(directory)): hashlib.sha256(
            p.read_bytes().replace(str(model_dir).encode(), b"MODEL")
        ).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_are_byte_identical_to_the_recorded_ones(
    case, tmp_path, make_config, monkeypatch, tiny_tokenizer_dir
):
    monkeypatch.chdir(tmp_path)  # relative input paths: fingerprint.json names them as written
    _write_inputs(tmp_path)
    result = run_prep(make_config("seed=7", **CASES[case]))
    import os

    if os.environ.get("RECORD_GOLDEN"):
        with open(os.environ["RECORD_GOLDEN"], "a") as f:
            f.write(json.dumps({case: _digests(result.output_dir, tiny_tokenizer_dir)}) + "\n")
        return
    assert _digests(result.output_dir, tiny_tokenizer_dir) == GOLDEN[case]


@pytest.mark.parametrize("case", ["csv_gz_keep", "parquet", "jsonl_eval"])
def test_input_fingerprint_matches_what_prep_writes(case, tmp_path, make_config, monkeypatch):
    from ftpipe.data.prep import input_fingerprint

    monkeypatch.chdir(tmp_path)
    _write_inputs(tmp_path)
    config = make_config("seed=7", **CASES[case])
    assert input_fingerprint(config) == run_prep(config).fingerprint
