"""`ftpipe recommend`'s domain signals on real text with the packaged all-MiniLM-L6-v2.

The demo's support tickets and SST-2's movie-review phrases lie near the shipped reference
prose; the same tickets with a third of their letters replaced at random lie far from it.
Skipped where ../shared/data/sst2 is absent.
"""

import csv
import random
import string

import pytest

from ftpipe.config.load import load_config
from ftpipe.data import run_prep
from ftpipe.strategies.recommend import Recommendation, run_recommend
from tests.helpers import REPO, SST2, needs_sst2, write_csv

pytestmark = [pytest.mark.integration, needs_sst2]

TICKETS = REPO / "examples" / "support_tickets" / "tickets.csv"


def recommend(tmp_path, name: str, *overrides: str) -> Recommendation:
    config = load_config(
        REPO / "configs" / "demo.yaml",
        [
            f"data.output_dir={tmp_path / name / 'prep'}",
            f"recommend.output_dir={tmp_path / name / 'recommend'}",
            "data.max_train_rows=1000",
            "recommend.probe_rows=300",
            *overrides,
        ],
    )
    run_prep(config)
    return run_recommend(config)


def noised_tickets(tmp_path, rate: float = 0.3):
    rng = random.Random(0)
    with TICKETS.open(newline="", encoding="utf-8") as handle:
        rows = [[row["text"], row["label"]] for row in csv.DictReader(handle)]
    return write_csv(
        tmp_path / "noised.csv",
        [
            ["".join(
                rng.choice(string.ascii_lowercase) if c.isalpha() and rng.random() < rate else c
                for c in text
            ), label]
            for text, label in rows
        ],
    )  # fmt: skip


def test_demo_and_sst2_count_as_similar_and_noised_text_as_dissimilar(tmp_path):
    threshold = load_config(REPO / "configs" / "demo.yaml").recommend.max_embedding_distance
    demo = recommend(tmp_path, "demo", f"data.train={TICKETS}")
    sst2 = recommend(
        tmp_path, "sst2", f"data.train={SST2 / 'train.tsv'}", "data.text_column=sentence",
        "data.on_error=drop",
    )  # fmt: skip
    far = recommend(tmp_path, "noised", f"data.train={noised_tickets(tmp_path)}")

    for near in (demo, sst2):
        assert near.case.endswith("-similar") and not near.case.endswith("dissimilar"), near
        assert near.measurements.embedding_distance <= threshold
    assert far.case.endswith("-dissimilar")
    # the embedding distance alone places it beyond the threshold, apart from the tokenizer
    assert far.measurements.embedding_distance > threshold
    # the packaged checkpoint is a sentence encoder without its masked-LM head, and says so
    assert demo.measurements.perplexity_ratio is None
    assert "ships no masked-LM head" in demo.text()
