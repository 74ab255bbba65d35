"""Serving a causal LM: held-out loss and perplexity, generation scored against references.

Evaluation scores two things on the held-out rows:

* **Loss and perplexity** over every row's target tokens (a completion with its EOS, a
  conversation's assistant turns), the rows tokenized exactly as prep tokenized them.
  Perplexity is exp(mean token loss).
* **Generation** on the first `evaluate.generate_rows` rows that have a reference (a
  completion, or a conversation's last assistant turn): the model answers the prompt with the
  run's generation settings (`generate`, greedy by default), and the answer is compared with
  the reference by exact match (after lowercasing and collapsing whitespace) and ROUGE-L (the
  F-measure of the longest common subsequence of lowercased words, as `rouge_score` computes
  it without stemming).

The predictions frame holds one row per held-out row: the prompt, the reference, the row's
summed loss and target tokens, and for generated rows the generation and its two scores. The
promotion gate resamples these rows (`ftpipe.registry.gate`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

WORD = re.compile(r"[a-z0-9]+")
"""A word for ROUGE-L: a run of lowercase letters or digits (rouge_score's tokenizer)."""

GENERATIONS = "generations.md"
"""The prompt / reference / generation table evaluate writes beside metrics.json."""


@dataclass(frozen=True)
class Prompted:
    """A held-out row as generation sees it: what the model is asked, and the answer expected.

    Attributes:
        prompt: Prompt text, or a conversation's messages before its last assistant turn.
        reference: The completion, or the last assistant turn; None for plain text.
    """

    prompt: str | list[dict[str, str]]
    reference: str | None


@dataclass
class LMOutputs:
    """What a causal LM produced on held-out rows (`Predictor.outputs`).

    Attributes:
        loss_sums: Per row, the summed loss over its target tokens.
        tokens: Per row, its target tokens.
        prompted: Per row, its prompt and reference.
        generations: The generated answers of the first rows with a reference, in order.
    """

    loss_sums: np.ndarray
    tokens: np.ndarray
    prompted: list[Prompted]
    generations: list[str] = field(default_factory=list)


def prompted(text: str, completion: str | None, chat: bool) -> Prompted:
    """A held-out row's prompt and reference, from the texts prep stored."""
    if chat:
        messages = json.loads(text)
        return Prompted(messages[:-1], messages[-1]["content"])
    return Prompted(text, completion)


def normalized(text: str) -> str:
    """Lowercased, with runs of whitespace made one space and the ends stripped."""
    return " ".join(text.lower().split())


def rouge_l(generated: str, reference: str) -> float:
    """ROUGE-L F-measure: the longest common subsequence of words, over both lengths."""
    a, b = WORD.findall(generated.lower()), WORD.findall(reference.lower())
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    common = previous[-1]
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


def score_rows(outputs: LMOutputs) -> tuple[dict[str, float], pd.DataFrame]:
    """The held-out metrics and the predictions frame (one row per held-out row)."""
    n = len(outputs.prompted)
    total_tokens = int(outputs.tokens.sum())
    loss = float(outputs.loss_sums.sum()) / max(total_tokens, 1)
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
               "target_tokens": float(total_tokens)}  # fmt: skip
    frame = pd.DataFrame({
        "row": np.arange(n),
        "prompt": [_shown(p.prompt) for p in outputs.prompted],
        "reference": [p.reference for p in outputs.prompted],
        "loss_sum": outputs.loss_sums.astype(np.float64),
        "tokens": outputs.tokens.astype(np.int64),
    })  # fmt: skip
    generated = [i for i, p in enumerate(outputs.prompted) if p.reference is not None]
    generated = generated[: len(outputs.generations)]
    column: list[str | None] = [None] * n
    exact = np.full(n, np.nan)
    rouge = np.full(n, np.nan)
    for i, text in zip(generated, outputs.generations, strict=True):
        reference = outputs.prompted[i].reference
        assert reference is not None
        column[i] = text
        exact[i] = float(normalized(text) == normalized(reference))
        rouge[i] = rouge_l(text, reference)
    frame["generated"], frame["exact_match"], frame["rouge_l"] = column, exact, rouge
    if generated:
        metrics |= {"exact_match": float(np.nanmean(exact)), "rouge_l": float(np.nanmean(rouge)),
                    "generated_rows": float(len(generated))}  # fmt: skip
    return metrics, frame


def generations_table(frame: pd.DataFrame, limit: int = 50) -> str:
    """The report's prompt / reference / generation table, in Markdown."""
    shown = frame.dropna(subset=["generated"]).head(limit)
    lines = ["| row | prompt | reference | generation | exact | ROUGE-L |",
             "| ---: | --- | --- | --- | :---: | ---: |"]  # fmt: skip
    for row in shown.itertuples():
        cells = (_cell(row.prompt), _cell(row.reference), _cell(row.generated))
        exact = "yes" if row.exact_match else "no"
        lines.append(f"| {row.row} | {' | '.join(cells)} | {exact} | {row.rouge_l:.3f} |")
    return "\n".join(lines) + "\n"


def summary(metrics: dict[str, float]) -> str:
    """Loss and perplexity, and the generation scores when rows were generated."""
    line = f"loss {metrics['loss']:.4f}, perplexity {metrics['perplexity']:.3f}"
    if "exact_match" in metrics:
        line += (
            f"; on {int(metrics['generated_rows'])} generated rows, exact match "
            f"{metrics['exact_match']:.4f}, ROUGE-L {metrics['rouge_l']:.4f}"
        )
    return line


def report_rows(metrics: dict[str, float]) -> list[list[str]]:
    """The report's section: one row per metric."""
    names = ("loss", "perplexity", "exact_match", "rouge_l")
    return [[name, f"{metrics[name]:.4f}"] for name in names if name in metrics]


def prediction_frame(generations: Sequence[str]) -> pd.DataFrame:
    """What predict returns per prompt: the generated text."""
    return pd.DataFrame({"generated": list(generations)})


def _shown(prompt: str | list[dict[str, str]]) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def _cell(text: str | None, width: int = 120) -> str:
    flat = " ".join(str(text or "").split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"
