"""Features from a frozen backbone, computed once per data and model, then cached.

Feature extraction trains only a head, so the backbone's output for each example never changes:
computing it once and training the head on the stored features turns every later epoch (and
every sweep trial) from a full forward pass into a small matrix product. A sentence task stores
one pooled vector per row, [rows, hidden]; a tagging task (`Task.per_token_features`) stores
every token's last hidden state, the rows one after another, [tokens, hidden]
(`TOKENS`, `token_starts`). The cache key covers the data fingerprint, the backbone's weights
and the pooling, so a stale entry cannot be hit. Features are stored with numpy's own format,
loaded with `allow_pickle=False`.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ftpipe.config.schema import Config
from ftpipe.data.prepared import Split, batches
from ftpipe.tasks import get_task

log = logging.getLogger(__name__)

TOKENS = "tokens"
"""The pooling that keeps every token's state: what a tagging task's head reads."""


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce [batch, tokens, hidden] to [batch, hidden], or keep it whole (`tokens`).

    `mean` averages the real tokens (how sentence encoders such as MiniLM were trained), `cls`
    takes the first token (BERT's classification token), `last` the last real token (what a
    decoder's head reads), `tokens` keeps each token's own state (what a tagger's head reads).
    """
    if how == TOKENS:
        return hidden
    if how == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    if how == "cls":
        return hidden[:, 0]
    # The last real token, whichever side the padding is on.
    last = mask.size(1) - 1 - mask.flip(1).argmax(1)
    return hidden[torch.arange(hidden.size(0)), last]


def pooling_for(config: Config, backbone) -> str:
    """Resolve `strategy.pooling`: `auto` is `last` for decoders and `mean` otherwise.

    A tagging task always gets `tokens` (its `check_config` refuses any other setting).
    """
    if get_task(config.data.task).per_token_features:
        return TOKENS
    if config.strategy.pooling != "auto":
        return config.strategy.pooling
    return "last" if is_decoder_only(backbone.config) else "mean"


def is_decoder_only(model_config) -> bool:
    """A decoder-only family: a next-token head, no masked-LM head (GPT-2, Llama, Qwen2)."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING

    kind = type(model_config)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING and kind not in MODEL_FOR_MASKED_LM_MAPPING


def token_starts(split: Split) -> np.ndarray:
    """Where each row starts in `TOKENS` features, then where the last row ends: [rows + 1]."""
    return np.concatenate([[0], np.cumsum(split.lengths)])


@torch.no_grad()
def extract_features(
    backbone: nn.Module, split: Split, pooling: str, batch_size: int, pad_id: int, desc: str = ""
) -> np.ndarray:
    """Features of every row, in row order, as float32.

    Pooled, that is [rows, hidden]; with `TOKENS`, every token's state, row after row,
    [tokens, hidden] (each row starts at its `token_starts`).
    """
    backbone.eval()
    # Batches of similar length waste less compute on padding; rows go back in order after.
    order = np.argsort(split.lengths, kind="stable")
    starts = token_starts(split) if pooling == TOKENS else np.arange(len(split) + 1)
    out: np.ndarray | None = None
    with tqdm(
        total=len(split), desc=desc or "features", unit="rows", disable=None, leave=False
    ) as bar:
        for rows, batch in batches(split, batch_size, pad_id, order):
            pooled = pool(backbone(**batch).last_hidden_state, batch["attention_mask"], pooling)
            if out is None:
                out = np.empty((starts[-1], pooled.shape[-1]), dtype=np.float32)
            pooled = pooled.float().numpy()
            if pooling == TOKENS:  # right-padded: each row's own tokens come first
                for j, row in enumerate(rows.tolist()):
                    out[starts[row] : starts[row + 1]] = pooled[j, : starts[row + 1] - starts[row]]
            else:
                out[rows] = pooled
            bar.update(len(rows))
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def weights_digest(module: nn.Module) -> str:
    """sha256 over parameter names and bytes: the identity of a backbone's weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def split_digest(split: Split) -> str:
    """sha256 over a split's token ids, token types and labels."""
    digest = hashlib.sha256()
    digest.update(np.array([len(ids) for ids in split.input_ids], dtype=np.int64).tobytes())
    for column in (split.input_ids, split.token_type_ids or []):
        digest.update(np.fromiter(itertools.chain.from_iterable(column), dtype=np.int64).tobytes())
    digest.update(split.labels.astype(np.int64).tobytes())
    return digest.hexdigest()


def cached_features(
    cache_dir: str | Path,
    data_fingerprint: str,
    backbone: nn.Module,
    splits: dict[str, Split],
    pooling: str,
    batch_size: int,
    pad_id: int,
) -> dict[str, np.ndarray]:
    """Features for each split: read from the cache, or computed once and stored.

    The key covers the data fingerprint, each split's exact rows (so a subsample never reads
    the full set's entry), the backbone's weights and the pooling.
    """
    rows = ":".join(f"{name}={split_digest(split)}" for name, split in sorted(splits.items()))
    key = hashlib.sha256(
        f"{data_fingerprint}:{rows}:{weights_digest(backbone)}:{pooling}".encode()
    ).hexdigest()[:24]
    directory = Path(cache_dir) / key
    paths = {name: directory / f"{name}.npy" for name in splits}
    if all(p.exists() for p in paths.values()):
        log.info("Feature cache hit: %s", directory)
        return {name: np.load(p, allow_pickle=False) for name, p in paths.items()}
    log.info("Computing features once for the cache: %s", directory)
    directory.mkdir(parents=True, exist_ok=True)
    features = {}
    for name, split in splits.items():
        features[name] = extract_features(backbone, split, pooling, batch_size, pad_id, name)
        # Write then rename, so concurrent sweep trials never read a half-written file.
        partial = paths[name].with_suffix(f".{os.getpid()}.partial.npy")
        np.save(partial, features[name], allow_pickle=False)
        partial.replace(paths[name])
    return features
