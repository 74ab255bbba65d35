"""What `ftpipe recommend` measures for language models (`data.task: causal-lm`).

A classifier is measured by a probe on its labels; a language model has none. What it trains on
are its targets, the tokens the loss covers: a completion and its EOS, a conversation's
assistant turns, or every token of plain text. Both axes are measured on them:

* **Size**: the training split's target tokens, counted through the task's own targets (the
  mask training applies, shifted by one as the loss is), against `LARGE_TARGET_TOKENS`.
* **Similarity to pretraining**: the base model's perplexity on the targets of
  `recommend.perplexity_rows` training rows (a seeded draw), over its perplexity on the shipped
  reference prose (`reference_english.txt`, cut into chunks of `data.max_length` tokens, so that
  both are predicted from contexts of the same length). Above `recommend.max_perplexity_ratio`
  the model predicts the targets far worse than general English: they are dissimilar.

| | similar | dissimilar |
| --- | --- | --- |
| small | prompt learning at a ratio up to `PROMPT_LEARNING_RATIO`, else LoRA | freeze lower half |
| large | full fine-tuning, small lr | full fine-tuning, higher lr, longer |

Prompt learning where the model already predicts the targets as well as the reference: steering
it is then enough, and it changes no weight.

The dissimilar and large cases are the sentence recommender's (`ftpipe.strategies.recommend`),
less `train.head_lr`: a language model's output layer is pretrained, so that rate moves only
adapters and virtual tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ftpipe.config.schema import Config
from ftpipe.data.prepared import PreparedData, Split, batches
from ftpipe.data.tokenize import load_tokenizer
from ftpipe.errors import FtpipeError, reason
from ftpipe.hub import resolve_model
from ftpipe.strategies.domain import reference_sentences
from ftpipe.strategies.recommend import (
    Plan,
    Recommendation,
    large_plan,
    loguniform,
    small_plan,
)
from ftpipe.strategies.word_probe import supported
from ftpipe.tasks import Task, get_task
from ftpipe.tasks.causal_lm import lm_metrics

LARGE_TARGET_TOKENS = 1_000_000
"""Training target tokens from which a language model's data counts as large: a round number
between a thousand-example instruction set and a fifty-thousand-example one. A candidate for a
`recommend.large_target_tokens` key."""

PROMPT_LEARNING_RATIO = 1.0
"""Perplexity ratio at or below which small, similar data learns virtual tokens rather than
LoRA: the model already predicts the targets as well as general prose, so steering it is
enough. A candidate for a `recommend.prompt_learning_ratio` key."""

PROMPT_STRATEGY = "p-tuning-v2"
"""The prompt-learning strategy recommended: virtual key/values at every layer (deep prompt
tuning), which moves a model further than virtual input tokens alone, produced through an MLP,
which trains more stably than free vectors."""

TOKENS_PER_BATCH = 4096
"""Padded tokens per forward pass when scoring: the logits take vocabulary-size floats each."""

UNIT = "target tokens"
"""What a language model's data size counts."""


@dataclass(frozen=True)
class LmMeasurements:
    """What a language model's recommendation is based on.

    Attributes:
        rows: Training rows.
        target_tokens: Training tokens the loss covers.
        perplexity_rows: Training rows whose targets were scored.
        perplexity_tokens: Target tokens scored in them.
        perplexity: The base model's perplexity on those targets.
        reference_chunks: Chunks of the reference prose scored.
        reference_tokens: Tokens scored in them (every one but each chunk's first).
        reference_perplexity: The base model's perplexity on the reference.
        perplexity_ratio: `perplexity` over `reference_perplexity`.
        unit: What the size counts.
    """

    rows: int
    target_tokens: int
    perplexity_rows: int
    perplexity_tokens: int
    perplexity: float
    reference_chunks: int
    reference_tokens: int
    reference_perplexity: float
    perplexity_ratio: float
    unit: str = UNIT


@dataclass(frozen=True)
class LmRecommendation(Recommendation):
    """A language model's recommendation: no new head, so its rates are named for what trains.

    For prompt learning and LoRA both ranges are those of the new weights (`train.head_lr`);
    for full and freeze both are the backbone's, its pretrained output layer included.
    """

    measurements: LmMeasurements

    def text(self) -> str:
        """The sentence recommendation's explanation, with a language model's learning rates."""
        lines = super().text().splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("Learning rates:"))
        low, high = self.head_lr_range
        trained = {"lora": "adapters", PROMPT_STRATEGY: "virtual tokens"}.get(self.strategy)
        lines[at] = (
            f"Learning rates: backbone frozen, {trained} (train.head_lr) {low:.0e} to {high:.0e}."
            if trained
            else f"Learning rates: backbone {low:.0e} to {high:.0e}, its pretrained output "
            "layer included (no new head)."
        )
        return "\n".join(lines) + "\n"


def recommend_lm(config: Config, prepared: PreparedData) -> LmRecommendation:
    """Measure prepared language-model data with the base model and recommend a strategy.

    Raises:
        FtpipeError: If the task's model is not a causal LM, or it cannot be loaded.
    """
    model = load_lm(config, prepared.task)
    measurements = measure_lm(config, prepared, model)
    return decide_lm(config, measurements, model.config.num_hidden_layers)


def load_lm(config: Config, task: Task) -> nn.Module:
    """The base causal LM, on the GPU where there is one, in eval mode.

    Raises:
        FtpipeError: If the task does not train a causal LM, or the model cannot be loaded.
    """
    if task.model_class != "AutoModelForCausalLM":
        raise FtpipeError(
            f"ftpipe recommend measures labelled data with a probe, or language-model targets "
            f"with the model's perplexity, and data.task={task.name} has neither. Set "
            "strategy.name (full, freeze, lora, ...) instead."
        )
    try:
        model = task.load_model(resolve_model(config.model.name), None,
                                revision=config.model.revision)  # fmt: skip
    except Exception as exc:  # Hub and file errors come in many types
        raise FtpipeError(
            f"Cannot load model.name={config.model.name!r} as a causal language model: "
            f"{reason(exc)}. ftpipe recommend scores the targets with it: use a local directory "
            "or Hub id of a decoder (GPT-2, Llama, Qwen2, ...) with safetensors weights."
        ) from None
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval()


def measure_lm(config: Config, prepared: PreparedData, model: nn.Module) -> LmMeasurements:
    """The training targets' size, and the model's perplexity on them against the reference's.

    Raises:
        FtpipeError: If the drawn rows have no target token to score.
    """
    task, train = prepared.task, prepared.splits["train"]
    pad_id = getattr(model.config, "pad_token_id", None) or 0
    drawn = np.random.default_rng(config.seed).permutation(len(train))
    sample = train.subset(np.sort(drawn[: config.recommend.perplexity_rows]))
    nll, scored = target_nll(model, task, sample, pad_id)
    if not scored:
        raise FtpipeError(
            f"None of the {len(sample)} training rows drawn for recommend.perplexity_rows has a "
            "token the loss covers, so there is nothing to score. Check data.train_on and the "
            "completion or assistant text in data.train."
        )
    chunks = reference_chunks(config)
    # Plain text: every token but a chunk's first is a target, as for prose in training.
    reference = Split(chunks, None, np.zeros(len(chunks), dtype=np.int64))
    reference_nll, reference_scored = target_nll(model, task, reference, pad_id)
    perplexity = lm_metrics(nll, scored)["perplexity"]
    reference_perplexity = lm_metrics(reference_nll, reference_scored)["perplexity"]
    return LmMeasurements(
        rows=len(train),
        target_tokens=count_targets(task, train, pad_id),
        perplexity_rows=len(sample),
        perplexity_tokens=scored,
        perplexity=round(perplexity, 3),
        reference_chunks=len(chunks),
        reference_tokens=reference_scored,
        reference_perplexity=round(reference_perplexity, 3),
        perplexity_ratio=round(perplexity / reference_perplexity, 3),
    )


def reference_chunks(config: Config) -> list[list[int]]:
    """The reference prose as one text, cut into chunks of `data.max_length` tokens.

    Each chunk carries the tokenizer's special tokens (a Llama-style BOS), as a training row
    does; prep's own tokenizer encodes it.
    """
    tokenizer = load_tokenizer(config.model)
    tokenizer.enable_truncation(config.data.max_length)
    first = tokenizer.encode(" ".join(reference_sentences()))
    return [encoding.ids for encoding in (first, *first.overflowing)]


def count_targets(task: Task, split: Split, pad_id: int) -> int:
    """Tokens the loss covers in `split`: the task's targets, shifted by one as the loss is."""
    return sum(
        int((task.targets(split, rows, tensors)[:, 1:] != -100).sum())
        for rows, tensors in batches(split, 1024, pad_id)
    )


@torch.no_grad()
def target_nll(
    model: nn.Module,
    task: Task,
    split: Split,
    pad_id: int,
    tokens_per_batch: int = TOKENS_PER_BATCH,
) -> tuple[float, int]:
    """Summed negative log-likelihood of the split's target tokens, and how many there are.

    Each target is predicted from the tokens before it, as in training's loss; rows are scored
    in batches of similar length (less padding) of at most `tokens_per_batch` padded tokens.
    """
    if not len(split):
        return 0.0, 0
    device = next(model.parameters()).device
    order = np.argsort(split.lengths, kind="stable")
    rows_per_batch = max(1, tokens_per_batch // int(split.lengths.max()))
    total, count = 0.0, 0
    for rows, tensors in batches(split, rows_per_batch, pad_id, order):
        targets = task.targets(split, rows, tensors)[:, 1:].to(device)
        inputs = {name: tensor.to(device) for name, tensor in tensors.items()}
        logits = model(**inputs, use_cache=False).logits[:, :-1]
        scored = targets != -100
        total += torch.nn.functional.cross_entropy(
            logits[scored].double(), targets[scored], reduction="sum"
        ).item()
        count += int(scored.sum())
    return total, count


def decide_lm(config: Config, m: LmMeasurements, num_blocks: int) -> LmRecommendation:
    """Map a language model's measurements to one of the four cases (see the module docstring)."""
    large = m.target_tokens >= LARGE_TARGET_TOKENS
    similar = m.perplexity_ratio <= config.recommend.max_perplexity_ratio
    mismatch = "the base model predicts the targets far worse than general English prose"
    if large:
        plan = _no_new_head(large_plan(similar, True, mismatch))
    elif similar:
        plan = _adapt_plan(m.perplexity_ratio)
    else:
        plan = _no_new_head(small_plan(False, False, num_blocks, m.rows, mismatch))
    *picked, why = plan
    reasons = [*_reasons(config, m, large, similar), why]
    return supported(LmRecommendation(*picked, reasons, m, num_blocks), get_task(config.data.task))


def _adapt_plan(ratio: float) -> Plan:
    """Small, familiar targets: virtual tokens where the model predicts them well, else LoRA."""
    if ratio <= PROMPT_LEARNING_RATIO:
        lr = (1e-3, 1e-2)  # new vectors, not pretrained weights: far higher rates
        space = dict([
            ("strategy.name", f"choice([{PROMPT_STRATEGY}])"), loguniform("train.head_lr", lr),
            ("strategy.prompt.num_virtual_tokens", "choice([10, 20, 50])"),
        ])  # fmt: skip
        why = (
            f"The base model already predicts the targets as well as general prose (a ratio of "
            f"at most {PROMPT_LEARNING_RATIO}): steer it with learned virtual tokens at every "
            "layer (prompt learning) and leave its weights as they are."
        )
        return "small-similar", PROMPT_STRATEGY, 0, lr, lr, space, why
    lr = (1e-4, 1e-3)
    space = dict([
        ("strategy.name", "choice([lora])"), loguniform("train.head_lr", lr),
        ("strategy.lora.r", "choice([8, 16])"),
    ])  # fmt: skip
    why = (
        f"Familiar text, but the base model predicts these targets less well than general prose "
        f"(a ratio above {PROMPT_LEARNING_RATIO}): adapt every layer a little (LoRA) rather "
        "than only steer it with virtual tokens."
    )
    return "small-similar", "lora", 0, lr, lr, space, why


def _no_new_head(plan: Plan) -> Plan:
    """A sentence plan for a model without a new head: `train.head_lr` moves nothing there."""
    case, strategy, freeze_layers, lr, _, space, why = plan
    space = {path: sampler for path, sampler in space.items() if path != "train.head_lr"}
    return case, strategy, freeze_layers, lr, lr, space, why


def _reasons(config: Config, m: LmMeasurements, large: bool, similar: bool) -> list[str]:
    """What was measured, and which side of each threshold it fell on."""
    t = config.recommend
    return [
        f"Training targets: {m.target_tokens:,} tokens the loss covers, in {m.rows:,} rows.",
        f"{'Large' if large else 'Small'} data: {m.target_tokens:,} target tokens "
        f"({'at least' if large else 'under'} the {LARGE_TARGET_TOKENS:,} from which a "
        "language model's data counts as large).",
        f"The base model's perplexity on the targets of {m.perplexity_rows:,} training rows "
        f"({m.perplexity_tokens:,} tokens) is {m.perplexity:.2f}, {m.perplexity_ratio:.2f}x its "
        f"{m.reference_perplexity:.2f} on the shipped reference prose ({m.reference_chunks:,} "
        f"chunks of up to {config.data.max_length} tokens) ("
        + ("within" if similar else "beyond")
        + f" recommend.max_perplexity_ratio={t.max_perplexity_ratio}).",
    ]
