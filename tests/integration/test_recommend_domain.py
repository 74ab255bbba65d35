"""`ftpipe recommend`'s domain signals on real text with the packaged all-MiniLM-L6-v2.

The demo's support tickets and SST-2's movie-review phrases lie near the shipped reference
prose; the same tickets with a third of their letters replaced at random lie far from it.
The SST-2 test is skipped where ../shared/data/sst2 is absent.
"""

import csv
import random

import pytest

from bench.words import noised
from ftpipe.config.load import load_config
from ftpipe.data import run_prep
from ftpipe.strategies.recommend import Recommendation, run_recommend
from tests.helpers import REPO, SST2, needs_sst2, write_csv

pytestmark = pytest.mark.integration

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


def noised_tickets(tmp_path):
    rng = random.Random(0)
    with TICKETS.open(newline="", encoding="utf-8") as handle:
        rows = [[noised(row["text"], rng), row["label"]] for row in csv.DictReader(handle)]
    return write_csv(tmp_path / "noised.csv", rows)


def test_the_demo_counts_as_similar_and_its_noised_copy_as_dissimilar(tmp_path):
    threshold = load_config(REPO / "configs" / "demo.yaml").recommend.max_embedding_distance
    near = recommend(tmp_path, "demo", f"data.train={TICKETS}")
    far = recommend(tmp_path, "noised", f"data.train={noised_tickets(tmp_path)}")

    assert near.case == "small-similar" and near.strategy == "feature-extraction"
    assert near.measurements.embedding_distance <= threshold
    assert far.case == "small-dissimilar"
    # the embedding distance alone places it beyond the threshold, apart from the tokenizer
    assert far.measurements.embedding_distance > threshold
    # the packaged checkpoint is a sentence encoder without its masked-LM head, and says so
    assert near.measurements.perplexity_ratio is None
    assert "ships no masked-LM head" in near.text()


@needs_sst2
def test_sst2_counts_as_similar(tmp_path):
    threshold = load_config(REPO / "configs" / "demo.yaml").recommend.max_embedding_distance
    sst2 = recommend(
        tmp_path, "sst2", f"data.train={SST2 / 'train.tsv'}", "data.text_column=sentence",
        "data.on_error=drop",
    )  # fmt: skip
    assert sst2.case == "small-similar"  # 1,000 rows: under recommend.large_per_class per class
    assert sst2.measurements.embedding_distance <= threshold
