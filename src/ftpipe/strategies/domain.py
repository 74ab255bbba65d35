"""How close the data's text is to general English: the label-free signals of `ftpipe recommend`.

The linear probe says how easily frozen features separate the classes; it needs labels and says
nothing about whether the text looks like what the model was pretrained on. These signals do,
by comparing a sample of the training text with a reference: a few thousand words of plain
English prose written for ftpipe (`reference_english.txt`, one sentence per line: facts,
stories, news, reviews, instructions).

* **Embedding distance**: the cosine distance between the data's mean embedding and the
  reference's. A row's embedding is the mean of the model's input embeddings of its word
  pieces (special tokens left out), scaled to unit length so no row weighs more than another.
  The input embeddings, not the last layer's: a sentence-embedding checkpoint's last layer is
  trained to tell topics apart, and there support tickets lie as far from the reference as
  character noise does (bench/domain_signals.py); in the input embeddings familiar English
  lands near the reference's centre whatever its topic, while noise, markup, another language
  or strings of rare words land far off.
* **Pseudo-perplexity ratio** (Salazar et al., 2020): mask each token in turn and score it with
  the masked-LM head; exp of the mean negative log-likelihood, the data's over the reference's.
  Only where the checkpoint ships its masked-LM head. Sentence-embedding checkpoints such as
  all-MiniLM-L6-v2 do not (nor do decoder-only models), and then the embedding distance and
  the tokenizer's signals decide alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import numpy as np
import torch
from torch import nn

from ftpipe.config.schema import Config
from ftpipe.hub import resolve_model
from ftpipe.tasks.base import pad_rows

REFERENCE = "reference_english.txt"
HEADS = ("ForMaskedLM", "ForPreTraining")
"""Architecture name endings of checkpoints saved with their masked-LM head."""
NO_HEAD = "not measured (the checkpoint ships no masked-LM head)"


@dataclass(frozen=True)
class DomainSignals:
    """The label-free measurements, with why pseudo-perplexity is absent when it is."""

    embedding_distance: float
    pseudo_perplexity: float | None
    reference_pseudo_perplexity: float | None
    pseudo_perplexity_note: str

    @property
    def perplexity_ratio(self) -> float | None:
        """The data's pseudo-perplexity over the reference's, where both were measured."""
        if self.pseudo_perplexity is None or not self.reference_pseudo_perplexity:
            return None
        return self.pseudo_perplexity / self.reference_pseudo_perplexity


def reference_sentences() -> list[str]:
    """The shipped reference prose, one sentence per line."""
    text = files("ftpipe.strategies").joinpath(REFERENCE).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def measure_domain(config: Config, backbone: nn.Module, rows: list[list[int]]) -> DomainSignals:
    """Compare token rows of the data (as prep wrote them) with the reference prose."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model(config.model.name), revision=config.model.revision, trust_remote_code=False
    )
    reference = tokenizer(
        reference_sentences(), truncation=True, max_length=config.data.max_length
    )["input_ids"]
    special = set(tokenizer.all_special_ids)
    distance = embedding_distance(
        mean_piece_embeddings(backbone, rows, special),
        mean_piece_embeddings(backbone, reference, special),
    )
    masked_lm, note = load_masked_lm(config)
    if masked_lm is None:
        return DomainSignals(round(distance, 4), None, None, note)
    count, mask_id = config.recommend.perplexity_rows, tokenizer.mask_token_id
    # A seeded random draw: the rows arrive in file order, which may be sorted by class.
    picked = np.random.default_rng(config.seed).permutation(len(rows))[:count]
    data_ppl = pseudo_perplexity(masked_lm, [rows[i] for i in picked], mask_id, special)
    reference_ppl = pseudo_perplexity(masked_lm, reference[:count], mask_id, special)
    if not (np.isfinite(data_ppl) and np.isfinite(reference_ppl)):
        return DomainSignals(round(distance, 4), None, None, "not measured (no tokens to score)")
    return DomainSignals(round(distance, 4), round(data_ppl, 2), round(reference_ppl, 2), note)


@torch.no_grad()
def mean_piece_embeddings(
    backbone: nn.Module, rows: list[list[int]], special_ids: set[int]
) -> np.ndarray:
    """Each row's mean input embedding over its word pieces, special tokens left out.

    A row of special tokens only is embedded as it is; an empty row is skipped.
    """
    table = backbone.get_input_embeddings()
    means = []
    for ids in filter(None, rows):
        pieces = [token for token in ids if token not in special_ids] or ids
        means.append(table(torch.tensor(pieces, dtype=torch.long)).float().mean(0).numpy())
    return np.stack(means)


def embedding_distance(data: np.ndarray, reference: np.ndarray) -> float:
    """1 - cosine between the mean unit-length row embeddings of the two samples."""
    centres = [
        (rows / np.linalg.norm(rows, axis=1, keepdims=True).clip(min=1e-12)).mean(axis=0)
        for rows in (data.astype(np.float64), reference.astype(np.float64))
    ]
    cosine = centres[0] @ centres[1] / (np.linalg.norm(centres[0]) * np.linalg.norm(centres[1]))
    return float(1.0 - cosine)


def load_masked_lm(config: Config) -> tuple[nn.Module | None, str]:
    """The checkpoint's masked-LM model, or None and why, when it has no trained MLM head."""
    from transformers import AutoConfig, AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    location = resolve_model(config.model.name)
    saved = AutoConfig.from_pretrained(
        location, revision=config.model.revision, trust_remote_code=False
    )
    # The saved architecture says whether the head was saved: BertModel (a sentence encoder)
    # or BertForSequenceClassification has none, BertForMaskedLM or BertForPreTraining has.
    if not any(name.endswith(HEADS) for name in saved.architectures or ()):
        return None, NO_HEAD
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a missing head is expected, not worth a load report
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            location, revision=config.model.revision, trust_remote_code=False,
            use_safetensors=True, output_loading_info=True,
        )  # fmt: skip
    finally:
        hf_logging.set_verbosity(verbosity)
    if info["missing_keys"]:  # a freshly initialised head would score noise
        return None, NO_HEAD
    return model.eval(), "measured"


@torch.no_grad()
def pseudo_perplexity(
    masked_lm: nn.Module,
    rows: list[list[int]],
    mask_id: int,
    special_ids: set[int],
    batch_size: int = 64,
) -> float:
    """Exp of the mean negative log-likelihood of each real token given all the others.

    Each row becomes one copy per real token with that token masked; the copies of all rows
    are scored in batches of `batch_size`, and special tokens ([CLS], [SEP]) are never scored.
    """
    copies, positions, targets = [], [], []
    for ids in rows:
        for position, token in enumerate(ids):
            if token in special_ids:
                continue
            masked = list(ids)
            masked[position] = mask_id
            copies.append(masked)
            positions.append(position)
            targets.append(token)
    if not copies:
        return float("nan")
    nll = 0.0
    for start in range(0, len(copies), batch_size):
        ids, mask = pad_rows(copies[start : start + batch_size], pad_id=0)  # masked, unread
        logits = masked_lm(input_ids=ids, attention_mask=mask).logits
        rows_here = torch.arange(len(ids))
        where = torch.tensor(positions[start : start + batch_size])
        truth = torch.tensor(targets[start : start + batch_size])
        nll -= logits[rows_here, where].log_softmax(-1)[rows_here, truth].sum().item()
    return float(np.exp(nll / len(copies)))
