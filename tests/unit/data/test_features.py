"""Pooled features, the feature cache, and heads trained on cached versus live features."""

import numpy as np
import pytest
import torch
from transformers import AutoModel

import ftpipe.data.features as features_module
from ftpipe.data import run_prep
from ftpipe.data.features import cached_features, extract_features, pool
from ftpipe.data.prepared import load_prepared
from tests.helpers import separable_rows, write_csv


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
