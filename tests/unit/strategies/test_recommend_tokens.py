"""The recommender on tagged words: entity tokens per type, a per-token probe cross-validated by
sentence, and only strategies token classification trains."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ftpipe.config.load import validate_config
from ftpipe.data import run_prep
from ftpipe.data.prepared import PrepDir
from ftpipe.strategies.recommend import Measurements, decide, run_recommend
from ftpipe.strategies.word_probe import (
    entity_tokens_per_type,
    sample_sentences,
    sentence_folds,
)
from ftpipe.tasks import get_task
from ftpipe.tune.space import parse_space
from tests.helpers import write_jsonl
from tests.unit.tasks.test_token_classification import sentences, token_config

REFUSED = get_task("token-classification").unsupported_strategies


def choices(space: dict[str, str]) -> list[str]:
    return space["strategy.name"].removeprefix("choice([").removesuffix("])").split(", ")


@pytest.fixture
def recommended(tmp_path, tiny_model_dir):
    # One sentence longer than a window, so the probe meets a sentence spread over three rows.
    long = (["my", "card", "was", "charged", "twice", "please", "help"] * 3,
            ["O", "B-PROD", "O", "O", "O", "O", "O"] * 3)  # fmt: skip
    rows = [*sentences(60, seed=2), long]
    source = str(write_jsonl(tmp_path / "d.jsonl", [{"tokens": w, "tags": t} for w, t in rows]))
    config = token_config(
        tmp_path, source, f"model.name={tiny_model_dir}",
        f"recommend.output_dir={tmp_path / 'recommend'}",
        # A random-init model's embeddings lie far from the reference prose: count all as near.
        "recommend.max_embedding_distance=2.0",
        max_length=10, stride=3,
    )  # fmt: skip
    run_prep(config)
    return config, run_recommend(config)


def test_tagged_words_are_measured_and_explained(recommended):
    config, recommendation = recommended
    m = recommendation.measurements
    train = pq.read_table(PrepDir.open(config.data.output_dir).split_path("train")).to_pydict()
    # one entry per sentence: a sentence longer than a window is several rows
    pairs = zip(train["text"], train["tags"], strict=True)
    by_sentence = dict(zip(train["sentence"], pairs, strict=True))
    tags = [tag for _, row in by_sentence.values() for tag in row.split(" ")]
    expected = {kind: sum(t[2:] == kind for t in tags if t[:2] in ("B-", "I-"))
                for kind in ("ACT", "PROD")}  # fmt: skip
    assert len(train["sentence"]) > len(by_sentence)  # windows were made
    assert m.unit == "entity tokens"
    assert m.rows_per_class == expected and m.smallest_class_rows == min(expected.values())
    assert m.classes == 2
    # every train sentence probed (probe_rows is far above), each word scored once, windows too
    assert m.probe_rows == len(by_sentence)
    assert m.probe_words == sum(len(text.split(" ")) for text, _ in by_sentence.values())
    assert m.tagged_words == m.probe_words  # every training sentence was probed
    assert 0.0 <= m.probe_entity_f1 <= 1.0 and 0.0 <= m.probe_accuracy <= 1.0
    assert m.majority_entity_f1 == 0.0  # always O finds no entity
    assert m.probe_lift == m.probe_entity_f1
    assert m.probe_folds == config.recommend.probe_folds

    assert recommendation.strategy not in REFUSED
    assert not set(choices(recommendation.search_space)) & set(REFUSED)
    parse_space(config, recommendation.search_space)  # a sweep accepts the suggested space

    out = Path(config.recommend.output_dir)
    text = (out / "recommendation.txt").read_text()
    assert (f"Entity tokens per type (training words tagged B-X or I-X): ACT "
            f"{expected['ACT']:,}, PROD {expected['PROD']:,}.") in text  # fmt: skip
    assert f"smallest of 2 entity types has {min(expected.values()):,} entity tokens" in text
    assert f"entity F1 of {m.probe_entity_f1:.2f}" in text and "grouped by sentence" in text
    written = json.loads((out / "recommendation.json").read_text())
    assert written["strategy"] == recommendation.strategy
    assert written["measurements"]["probe_entity_f1"] == m.probe_entity_f1


def token_measurements(lift: float, smallest: int = 100, distance: float = 0.1) -> Measurements:
    return Measurements(
        2, {"ACT": smallest, "PROD": smallest * 2}, smallest, 50, 5, 0.9, 0.01, 0.7, lift, 0.0,
        1.1, distance, None, "not measured", unit="entity tokens", probe_words=400,
        probe_entity_f1=lift, probe_entity_f1_std=0.02, majority_entity_f1=0.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("m", "case", "strategy", "freeze_layers"),
    [
        # a head alone, on per-token features cached once
        (token_measurements(0.9), "small-similar", "feature-extraction", 0),
        (token_measurements(0.2), "small-similar", "lora", 0),
        # an entity F1 of 0.7 is under the tagged words' bar (0.8), though a sentence lift of 0.7
        # clears recommend.similar_probe_lift (0.6)
        (token_measurements(0.7), "small-similar", "lora", 0),
        (token_measurements(0.9, distance=0.3), "small-dissimilar", "freeze", 3),
        (token_measurements(0.9, smallest=5000), "large-similar", "full", 0),
    ],
)
def test_each_case_picks_a_strategy_the_task_trains(m, case, strategy, freeze_layers):
    config = validate_config({"data": {"train": "x.jsonl", "task": "token-classification"}})
    recommendation = decide(config, m, num_blocks=6)
    assert (recommendation.case, recommendation.strategy) == (case, strategy)
    assert recommendation.freeze_layers == freeze_layers
    assert not set(choices(recommendation.search_space)) & set(REFUSED)
    parse_space(config, recommendation.search_space)
    if strategy == "feature-extraction":
        assert "Learning rates: backbone frozen" in recommendation.text()
        # the head's L2 range, C from 0.1 to 100, counts the words it is fit on
        on_words = decide(config, replace(m, tagged_words=10_000), num_blocks=6)
        assert on_words.search_space["train.weight_decay"] == "loguniform(1e-06, 0.001)"
    # the same measurements for sentences pick feature extraction at a lift of 0.7 too
    sentence_config = validate_config({"data": {"train": "x.csv"}})
    as_sentences = replace(m, unit="rows", probe_words=None, probe_entity_f1=None)
    if case == "small-similar" and m.probe_lift >= 0.6:
        assert decide(sentence_config, as_sentences, num_blocks=6).strategy == "feature-extraction"


def test_folds_never_split_a_sentence():
    rng = np.random.default_rng(0)
    words = np.repeat(np.arange(53), rng.integers(1, 9, size=53))  # sentence id per word
    rng.shuffle(words)
    fold = sentence_folds(words, 5, seed=1)
    assert set(fold.tolist()) == set(range(5))
    for f in range(5):
        assert not set(words[fold == f]) & set(words[fold != f])
    per_fold = [len(set(words[fold == f])) for f in range(5)]
    assert max(per_fold) - min(per_fold) <= 1  # sentences dealt evenly
    assert np.array_equal(fold, sentence_folds(words, 5, seed=1))  # seeded


def test_a_sample_takes_whole_sentences_and_types_count_b_and_i_words():
    rows = np.array([0, 0, 0, 1, 2, 2, 3, 4])  # sentence 0 and 2 span several windows
    picked = sample_sentences(rows, 3, seed=0)
    assert len(set(rows[picked])) == 3
    assert all(set(np.flatnonzero(rows == s)) <= set(picked) for s in rows[picked])
    assert len(sample_sentences(rows, 10, seed=0)) == len(rows)
    counts = {"O": 50, "B-PER": 3, "I-PER": 2, "B-LOC": 4, "I-ORG": 1}
    assert entity_tokens_per_type(counts) == {"LOC": 4, "ORG": 1, "PER": 5}
