"""Prep's peak memory is bounded by the input (issue 20, defect 2): it streams, so a 40 MiB CSV
must not take ~16x its size, as the whole-file reader did (about 17x measured)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MIB = 2**20
MARGIN = 320 * MIB
"""Room above the imports: one shard of rows being tokenized and written (50,000 rows), the
batch being parsed, allocator slack. Measured at ~200 MiB on a 10 MiB input, where the
file-size term is small; the whole-file reader took ~870 MiB over its imports on 50 MiB."""

CHILD = """
import json, resource, sys
from ftpipe.config.load import validate_config
from ftpipe.data.prep import run_prep
from ftpipe.data.tokenize import load_tokenizer
config = validate_config(json.loads(sys.argv[1]))
load_tokenizer(config.model)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stats = run_prep(config).stats
print(json.dumps({"base": base * 1024, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  * 1024, "rows": sum(s["rows"] for s in stats["splits"].values())}))
"""
"""Imports ftpipe and loads the tokenizer (the constant part), then preps; prints bytes."""

WORDS = [
    "the", "a", "my", "order", "is", "late", "refund", "please", "card", "was", "charged",
    "twice", "hello", "help", "login", "password", "reset", "app", "crash", "good", "bad",
]  # fmt: skip


def _generate(path: Path, size: int) -> int:
    rng = random.Random(0)
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("text,label\n")
        while handle.tell() < size:
            lines = []
            for _ in range(5_000):
                text = " ".join(rng.choices(WORDS, k=rng.randint(8, 30)))
                lines.append(f"{text} {rows},{rng.choice(('pos', 'neg'))}\n")
                rows += 1
            handle.write("".join(lines))
    return rows


@pytest.mark.slow
def test_peak_memory_is_at_most_twice_the_file_plus_a_constant(tmp_path):
    train = tmp_path / "train.csv"
    rows = _generate(train, 40 * MIB)
    size = train.stat().st_size
    raw = {"data": {"train": str(train), "output_dir": str(tmp_path / "prep"), "max_length": 64}}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(raw)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rows"] == rows
    grown = result["peak"] - result["base"]
    assert grown <= 2 * size + MARGIN, (
        f"prep grew {grown / MIB:.0f} MiB over its imports on a {size / MIB:.0f} MiB file "
        f"(limit {(2 * size + MARGIN) / MIB:.0f} MiB)"
    )
