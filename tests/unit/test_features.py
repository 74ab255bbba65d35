"""Pooled features, the feature cache, and heads trained on cached versus live features."""

import numpy as np
import pytest
import torch
from transformers import AutoModel

import ftpipe.data.features as features_module
from ftpipe.data import run_prep
from ftpipe.data.features import cached_features, extract_features, pool
from ftpipe.data.prepared import load_prepared
from ftpipe.strategies.feature_extraction import cached, live_features, train_head
from tests.helpers import write_csv

WORDS = {
    "good": ["good", "hello", "help", "please", "refund"],
    "bad": ["bad", "late", "crash", "charged", "twice"],
}


def separable_rows(n_per_class: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_per_class):
        for label, words in WORDS.items():
            text = " ".join(rng.choice(words, size=4)) + f" {'a ' * (i % 5)}the"
            rows.append([f"{text} {i}", label])
    return rows


@pytest.fixture
def prepared(tmp_path, make_config, tiny_model_dir):
    train = write_csv(tmp_path / "train.csv", separable_rows(40))
    config = make_config(
        f"model.name={tiny_model_dir}", train=str(train), eval_fraction=0.25, duplicates="keep"
    )
    return load_prepared(run_prep(config).output_dir)


@pytest.fixture
def backbone(tiny_model_dir):
    return AutoModel.from_pretrained(tiny_model_dir)


def test_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 2.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 1.0]]
    assert pool(hidden, mask, "last").tolist() == [[3.0, 3.0]]
    left_padded = torch.tensor([[[100.0, 100.0], [1.0, 1.0], [3.0, 3.0]]])
    assert pool(left_padded, torch.tensor([[0, 1, 1]]), "last").tolist() == [[3.0, 3.0]]


def test_batched_features_match_one_row_at_a_time(prepared, backbone):
    split = prepared.splits["eval"]
    together = extract_features(backbone, split, "mean", batch_size=8, pad_id=0)
    alone = np.stack(
        [
            extract_features(backbone, split.subset(np.array([i])), "mean", 1, 0)[0]
            for i in range(len(split))
        ]
    )
    assert together.shape == (len(split), 32)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_cache_computes_once_then_hits(tmp_path, prepared, backbone, monkeypatch):
    args = (tmp_path / "cache", prepared.fingerprint, backbone, prepared.splits, "mean", 16, 0)
    first = cached_features(*args)
    monkeypatch.setattr(
        features_module, "extract_features", lambda *a, **k: pytest.fail("recomputed")
    )
    again = cached_features(*args)
    for name in prepared.splits:
        np.testing.assert_array_equal(first[name], again[name])
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_a_subsample_never_reads_the_full_sets_entry(tmp_path, prepared, backbone):
    cache = tmp_path / "cache"
    full = cached_features(cache, prepared.fingerprint, backbone, prepared.splits, "mean", 16, 0)
    part = {"train": prepared.splits["train"].subset(np.arange(4)), "eval": prepared.splits["eval"]}
    subset = cached_features(cache, prepared.fingerprint, backbone, part, "mean", 16, 0)
    assert subset["train"].shape[0] == 4
    np.testing.assert_allclose(subset["train"], full["train"][:4], atol=1e-5)


def test_cache_key_changes_with_weights_pooling_and_data(tmp_path, prepared, backbone):
    cache = tmp_path / "cache"
    cached_features(cache, prepared.fingerprint, backbone, prepared.splits, "mean", 16, 0)
    cached_features(cache, prepared.fingerprint, backbone, prepared.splits, "cls", 16, 0)
    cached_features(cache, "other-data", backbone, prepared.splits, "mean", 16, 0)
    with torch.no_grad():
        next(backbone.parameters()).add_(0.01)
    cached_features(cache, prepared.fingerprint, backbone, prepared.splits, "mean", 16, 0)
    assert len(list(cache.iterdir())) == 4


def test_head_on_cached_features_matches_head_on_live_backbone(tmp_path, prepared, backbone):
    train, held_out = prepared.splits["train"], prepared.splits["eval"]
    features = cached_features(
        tmp_path / "c", prepared.fingerprint, backbone, prepared.splits, "mean", 16, 0
    )
    results = {}
    for name, features_of in {
        "cached": cached(features["train"]),
        "live": live_features(backbone, train, "mean", 0),
    }.items():
        torch.manual_seed(0)
        head = torch.nn.Linear(32, 2)
        losses = train_head(
            head, features_of, train.labels, epochs=30, lr=0.05, batch_size=16, seed=0
        )
        with torch.no_grad():
            predicted = head(torch.from_numpy(features["eval"])).argmax(1).numpy()
        results[name] = (losses, (predicted == held_out.labels).mean())
    (cached_losses, cached_accuracy), (live_losses, live_accuracy) = (
        results["cached"],
        results["live"],
    )
    assert cached_losses[-1] < cached_losses[0] * 0.7, "the head did not learn"
    assert cached_accuracy >= 0.8
    assert abs(cached_accuracy - live_accuracy) <= 0.05
    np.testing.assert_allclose(cached_losses, live_losses, rtol=1e-3)
