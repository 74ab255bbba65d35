"""`feature-extraction`: the whole backbone is frozen and only the new head trains.

The cheapest strategy, and the right one when the pretrained features already separate the
classes (small data, similar domain). Because the backbone never changes, its pooled features
can be computed once (ftpipe.data.features) and the head trained on them; `train_head` runs on
either the cache or a live backbone.
"""

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ftpipe.config.schema import Config
from ftpipe.data.features import pool
from ftpipe.data.prepared import Split, batches
from ftpipe.strategies.base import register, require_classifier, set_trainable
from ftpipe.strategies.layers import Layout


@register("feature-extraction")
def feature_extraction(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Freeze the backbone; train the head."""
    require_classifier(model, "feature-extraction")
    set_trainable([model], False)
    set_trainable([m for _, m in layout.head], True)
    return model


def train_head(
    head: nn.Module,
    features_of: Callable[[np.ndarray], torch.Tensor],
    labels: np.ndarray,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> list[float]:
    """Train a head on pooled features; returns the mean loss of each epoch.

    `features_of(rows)` gives the features of those rows: a slice of the cache, or a live
    forward pass of the frozen backbone. Both paths run this same loop, so they differ only
    in where the features come from.
    """
    generator = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    targets = torch.from_numpy(labels)
    losses = []
    for _ in range(epochs):
        head.train()
        order = generator.permutation(len(labels))
        total = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(head(features_of(rows)), targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        losses.append(total / len(labels))
    return losses


def live_features(
    backbone: nn.Module, split: Split, pooling: str, pad_id: int
) -> Callable[[np.ndarray], torch.Tensor]:
    """`features_of` that runs the frozen backbone on every call (the uncached baseline)."""

    @torch.no_grad()
    def features_of(rows: np.ndarray) -> torch.Tensor:
        backbone.eval()
        _, batch = next(batches(split.subset(rows), len(rows), pad_id))
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return pool(backbone(**inputs).last_hidden_state, batch["attention_mask"], pooling)

    return features_of


def cached(features: np.ndarray) -> Callable[[np.ndarray], torch.Tensor]:
    """`features_of` that slices precomputed features."""
    table = torch.from_numpy(features)
    return lambda rows: table[torch.from_numpy(rows)]
