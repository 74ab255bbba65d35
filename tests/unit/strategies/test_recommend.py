"""The recommender on two datasets the frozen probe finds easy and hard, its decision table, and
pseudo-perplexity. (Its domain signals on real text: tests/integration/test_recommend_domain.py.)"""

import json

import numpy as np
import pytest

from ftpipe.config.load import validate_config
from ftpipe.data import run_prep
from ftpipe.strategies.recommend import Measurements, decide, run_recommend
from tests.helpers import ftpipe, write_csv

WORDS = {"good": ["good", "hello", "help", "please"], "bad": ["bad", "late", "crash", "charged"]}


def rows(n_per_class: int, separable: bool, seed: int = 0) -> list[list[str]]:
    """Texts from in-vocabulary words; labels follow the words, or are coin flips."""
    rng = np.random.default_rng(seed)
    out = []
    for label, words in WORDS.items():
        for i in range(n_per_class):
            text = " ".join(rng.choice(words, size=5)) + " the" * (i % 4)
            out.append([text, label if separable else rng.choice(list(WORDS))])
    return out


@pytest.fixture
def recommend_on(tmp_path, make_config, tiny_model_dir):
    def run(name: str, separable: bool):
        train = write_csv(tmp_path / f"{name}.csv", rows(60, separable))
        config = make_config(
            f"model.name={tiny_model_dir}",
            f"recommend.output_dir={tmp_path / name / 'recommend'}",
            # A random-init model's embeddings place no text near the reference prose: these
            # tests are about the probe, so every text counts as near.
            "recommend.max_embedding_distance=2.0",
            train=str(train),
            output_dir=str(tmp_path / name / "prep"),
            duplicates="keep",
            on_error="drop",
        )
        run_prep(config)
        return config, run_recommend(config)

    return run


def test_the_probe_picks_within_the_case_on_easy_and_hard_data(recommend_on):
    easy_config, easy = recommend_on("easy", separable=True)
    hard_config, hard = recommend_on("hard", separable=False)
    assert easy.measurements.probe_accuracy > 0.9
    assert hard.measurements.probe_accuracy < 0.7
    assert (easy.case, easy.strategy) == ("small-similar", "feature-extraction")
    assert (hard.case, hard.strategy) == ("small-similar", "lora")
    assert "train.lr" in hard.search_space and "train.lr" not in easy.search_space
    # the tiny model is saved as a classifier, without a masked-LM head to score tokens with
    assert easy.measurements.perplexity_ratio is None
    assert (
        easy.measurements.perplexity_note == "not measured (the checkpoint ships no masked-LM head)"
    )

    with open(f"{easy_config.recommend.output_dir}/recommendation.json") as handle:
        written = json.load(handle)
    assert written["strategy"] == "feature-extraction"
    assert written["measurements"]["probe_accuracy"] == easy.measurements.probe_accuracy
    with open(f"{hard_config.recommend.output_dir}/recommendation.txt") as handle:
        text = handle.read()
    assert f"{hard.measurements.probe_accuracy:.1%}" in text  # the explanation cites the numbers
    assert "Suggested search space:" in text
    assert f"Training rows per class: bad {hard.measurements.rows_per_class['bad']:,}" in text
    with open(f"{easy_config.data.output_dir}/stats.json") as handle:
        prepped = json.load(handle)["splits"]["train"]["rows_per_label"]
    assert easy.measurements.rows_per_class == prepped


def measured(
    smallest: int,
    lift: float,
    unknown: float = 0.0,
    pieces: float = 1.1,
    distance: float = 0.1,
    ratio: float | None = None,
) -> Measurements:
    counts = {"a": smallest, "b": smallest * 2}
    return Measurements(
        2, counts, smallest, 200, 5, 0.5 + lift / 2, 0.01, 0.5, lift, unknown, pieces, distance,
        ratio, "measured" if ratio else "not measured",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("m", "case", "strategy"),
    [
        (measured(100, 0.9), "small-similar", "feature-extraction"),
        (measured(100, 0.2), "small-similar", "lora"),
        (measured(100, 0.9, unknown=0.05), "small-dissimilar", "freeze"),
        (measured(100, 0.9, pieces=2.0), "small-dissimilar", "freeze"),
        (measured(100, 0.9, distance=0.3), "small-dissimilar", "freeze"),
        (measured(100, 0.9, ratio=3.9), "small-similar", "feature-extraction"),
        (measured(100, 0.9, ratio=4.1), "small-dissimilar", "freeze"),
        (measured(5000, 0.9), "large-similar", "full"),
        (measured(5000, 0.2), "large-similar", "full"),
        (measured(5000, 0.9, distance=0.3), "large-dissimilar", "full"),
    ],
)
def test_four_cases_and_their_thresholds(m, case, strategy):
    config = validate_config({"data": {"train": "x.csv"}})
    recommendation = decide(config, m, num_blocks=6)
    assert (recommendation.case, recommendation.strategy) == (case, strategy)
    if case == "small-dissimilar":
        assert recommendation.freeze_layers == 3  # the lower half of 6 blocks
    assert recommendation.lr_range[0] < recommendation.lr_range[1]
    assert all(path.count(".") == 1 for path in recommendation.search_space)


def test_thresholds_are_configurable():
    config = validate_config({"data": {"train": "x.csv"}, "recommend": {"large_per_class": 50}})
    assert decide(config, measured(100, 0.9), num_blocks=6).case == "large-similar"


def test_recommend_refuses_prep_made_for_another_model(tmp_path, make_config, tiny_model_dir):
    from ftpipe.errors import FtpipeError

    train = write_csv(tmp_path / "t.csv", rows(20, separable=True))
    config = make_config(f"model.name={tiny_model_dir}", train=str(train), duplicates="keep")
    run_prep(config)
    other = validate_config(
        {**config.model_dump(mode="json"), "model": {"name": "all-MiniLM-L6-v2"}}
    )
    with pytest.raises(FtpipeError, match=r"was prepared for model.name=.*not 'all-MiniLM-L6-v2'"):
        run_recommend(other)


def test_recommend_without_prep_says_to_run_it(tmp_path):
    result = ftpipe("recommend", "-c", "configs/demo.yaml", f"data.output_dir={tmp_path / 'none'}")
    assert result.returncode == 2
    assert "Run `ftpipe prep` with the same config first" in " ".join(result.stderr.split())


def test_a_head_only_sweep_tunes_the_l2_strength_by_the_data_size():
    from ftpipe.tune.space import parse_space

    config = validate_config({"data": {"train": "x.csv"}})
    ranges = []
    for smallest in (50, 500):
        space = decide(config, measured(smallest, 0.9), num_blocks=6).search_space
        ranges.append(parse_space(config, space)["train.weight_decay"].args)
    # C = 1 / (rows * weight_decay) spans 0.1 to 100 in scikit-learn's terms, whatever the rows.
    for (low, high), rows in zip(ranges, (150, 1500), strict=True):
        assert (1 / (rows * high), 1 / (rows * low)) == pytest.approx((0.1, 100), rel=0.05)


def test_pseudo_perplexity_of_a_uniform_head_is_the_vocabulary_size(tmp_path, tiny_model_dir):
    # A masked-LM head with zero weights gives every token the same score, so each masked
    # token's likelihood is 1/vocab and the pseudo-perplexity is exactly the vocabulary size.
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from ftpipe.strategies.domain import load_masked_lm, pseudo_perplexity

    config = BertConfig(vocab_size=29, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64)  # fmt: skip
    model = BertForMaskedLM(config).eval()
    with torch.no_grad():
        model.cls.predictions.decoder.weight.zero_()
        model.cls.predictions.decoder.bias.zero_()
    rows = [[2, 7, 8, 9, 3], [2, 10, 3], [2, 3]]  # [CLS] ... [SEP]; the last has nothing to score
    assert pseudo_perplexity(model, rows, mask_id=4, special_ids={0, 1, 2, 3, 4}) == (
        pytest.approx(29.0, rel=1e-5)
    )
    # with a trained-looking (random, non-uniform) head, the batched and padded scoring equals
    # scoring each masked copy alone
    torch.manual_seed(0)
    model = BertForMaskedLM(config).eval()
    special = {0, 1, 2, 3, 4}
    nll, count = 0.0, 0
    with torch.no_grad():
        for ids in rows:
            for position, token in enumerate(ids):
                if token in special:
                    continue
                masked = torch.tensor([[*ids[:position], 4, *ids[position + 1 :]]])
                logits = model(input_ids=masked).logits[0, position]
                nll -= logits.log_softmax(-1)[token].item()
                count += 1
    assert pseudo_perplexity(model, rows, 4, special, batch_size=2) == pytest.approx(
        float(np.exp(nll / count)), rel=1e-4
    )
    # saved with its head, it loads as a masked LM; the classifier checkpoint does not
    BertForMaskedLM(config).save_pretrained(tmp_path / "mlm", safe_serialization=True)
    with_head = validate_config(
        {"data": {"train": "x.csv"}, "model": {"name": str(tmp_path / "mlm")}}
    )
    assert load_masked_lm(with_head)[1] == "measured"
    without = validate_config({"data": {"train": "x.csv"}, "model": {"name": str(tiny_model_dir)}})
    assert load_masked_lm(without) == (
        None,
        "not measured (the checkpoint ships no masked-LM head)",
    )
