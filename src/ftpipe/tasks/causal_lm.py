"""`data.task: causal-lm`: language-model fine-tuning on text, or on prompt + completion.

The model is `AutoModelForCausalLM`; its output layer is pretrained (and often tied to the
embeddings), so no head is new. Targets are the input ids, with padding and each row's
prompt masked out (-100), so a prompt + completion row trains on its completion only, EOS
included (`ftpipe.data.completions` writes the rows).
Metrics: mean token loss and perplexity; checkpoints are selected by loss. Served models
generate (`ftpipe.tasks.lm_serving`): evaluate adds exact match and ROUGE-L of generations
against the references, and the promotion gate compares loss (lower is better), exact match
or ROUGE-L.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ftpipe.tasks import lm_serving
from ftpipe.tasks.base import Evaluator, HeldOutRows, Rows, ServingTask, Tokens, pad_targets
from ftpipe.tasks.cells import Cells
from ftpipe.tasks.chat import canonical, read_conversation
from ftpipe.tasks.labels import LabelMap


def lm_metrics(loss_sum: float, tokens: int) -> dict[str, float]:
    """Mean token loss and perplexity."""
    loss = loss_sum / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def lm_targets(rows: Rows, index: np.ndarray, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token targets: the input ids, with padding and each row's prompt masked out.

    Conversations carry their own per-token targets (the assistant turns). The model shifts
    labels by one itself; -100 positions add nothing to the loss.
    """
    if rows.token_labels is not None:
        return pad_targets(rows.token_labels, index, tensors["input_ids"].shape[1])
    labels = tensors["input_ids"].masked_fill(tensors["attention_mask"] == 0, -100)
    if rows.prompt_lengths is not None:
        positions = torch.arange(labels.size(1))
        prompt = torch.from_numpy(rows.prompt_lengths[index]).unsqueeze(1)
        labels = labels.masked_fill(positions.unsqueeze(0) < prompt, -100)
    return labels


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each position's next-token loss [rows, length - 1], and which positions are targets.

    Prompt learning (p-tuning, prompt tuning) prepends virtual tokens, and the model returns
    logits for them too; the input's own positions are the last ones.
    """
    logits = logits[:, -targets.size(1) :]
    shifted = targets[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), shifted, reduction="none"
    )
    return losses, shifted != -100


class _TokenLossEvaluator:
    """Sums the loss over real target tokens; the ranks add their sums."""

    def __init__(self) -> None:
        self.totals: torch.Tensor | None = None

    def update(
        self, logits: torch.Tensor, targets: torch.Tensor, rows: np.ndarray, own: np.ndarray
    ) -> None:
        losses, mask = token_losses(logits, targets)
        # Rows this rank does not own are repeats that only keep ranks in step.
        mask &= torch.from_numpy(own).to(losses.device).unsqueeze(1)
        batch = torch.stack([losses[mask].sum().double(), mask.sum().double()])
        self.totals = batch if self.totals is None else self.totals + batch

    def compute(self, world_size: int) -> dict[str, float]:
        totals = self.totals
        if totals is None:  # on the GPU where there is one: NCCL reduces device tensors
            device = "cuda" if torch.cuda.is_available() else "cpu"
            totals = torch.zeros(2, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(totals)
        return lm_metrics(float(totals[0]), int(totals[1]))


class CausalLM(ServingTask):
    """Language modelling on text, or on prompt + completion with the loss on the completion."""

    name: ClassVar[str] = "causal-lm"
    model_class: ClassVar[str] = "AutoModelForCausalLM"
    peft_task_type: ClassVar[str] = "CAUSAL_LM"
    labelled: ClassVar[bool] = False
    new_head: ClassVar[bool] = False
    second_text_key: ClassVar[str] = "completion_column"
    metrics: ClassVar[dict[str, bool]] = {"loss": False, "perplexity": False}
    default_metric: ClassVar[str] = "loss"
    counts_tokens: ClassVar[bool] = True
    ends_completions: ClassVar[bool] = True
    prep_layout: ClassVar[int] = 2  # 2: completions end with EOS, prompts trimmed first
    generates: ClassVar[bool] = True
    gate_metrics: ClassVar[tuple[str, ...]] = ("loss", "exact_match", "rouge_l")
    report_unit: ClassVar[str] = "metric"
    report_columns: ClassVar[tuple[str, ...]] = ("value",)

    def read_cells(
        self,
        texts: list[Any],
        labels: list[Any] | None,
        locations: list[str],
        lines: list[int] | None,
        config: Any,
    ) -> Cells:
        """Texts, or with `data.messages_column` conversations in their canonical form."""
        if config.messages_column is None:
            return super().read_cells(texts, labels, locations, lines, config)
        read = Cells([], [""] * len(texts), {})
        for i, cell in enumerate(texts):
            messages = read_conversation(cell)
            if isinstance(messages, str):
                read.problems[i] = ("bad_conversation", f"{locations[i]}: {messages}")
                messages = []
            read.texts.append(canonical(messages))
        return read

    def text_of(self, cell: Any) -> str:
        """A valid row's text, or its conversation's canonical form."""
        if isinstance(cell, list):
            messages = read_conversation(cell)
            assert not isinstance(messages, str), messages
            return canonical(messages)
        return super().text_of(cell)

    def list_cells(self, config: Any) -> tuple[str, ...]:
        """A conversation's text cell is a list, read in `read_cells`."""
        return ("text",) if config.messages_column is not None else ()

    def prep_columns(self, tokens: Tokens) -> dict[str, pa.Array]:
        """Where each row's completion starts: everything before it is prompt, not target.

        A conversation's targets are per token instead (its assistant turns). Decoders take no
        token types, so none are written.
        """
        if tokens.targets is not None:
            return {"token_labels": pa.array(tokens.targets, pa.list_(pa.int32()))}
        if tokens.second_starts is None:
            return {}
        return {"prompt_length": pa.array(tokens.second_starts, pa.int32())}

    def targets(self, rows: Rows, index: np.ndarray, tensors: dict[str, torch.Tensor]):
        """Next-token targets with padding and prompts masked out."""
        return lm_targets(rows, index, tensors)

    def evaluator(self, rows: Rows, labels: LabelMap | None) -> Evaluator:
        """Token loss and perplexity over the split."""
        return _TokenLossEvaluator()

    def predictions(self, outputs: Sequence[str], names: Sequence[str]) -> pd.DataFrame:
        """Per prompt, the `generated` text."""
        return lm_serving.prediction_frame(outputs)

    def score_heldout(
        self,
        outputs: lm_serving.LMOutputs,
        heldout: HeldOutRows,
        names: Sequence[str],
        temperature: float,
        output_dir: Path,
        bins: int,
    ) -> tuple[dict[str, float], pd.DataFrame]:
        """Loss and perplexity per row and overall; generations scored against references.

        Writes `generations.md`, the prompt / reference / generation table.
        """
        metrics, frame = lm_serving.score_rows(outputs)
        (output_dir / lm_serving.GENERATIONS).write_text(lm_serving.generations_table(frame))
        return metrics, frame

    def signature(self, names: Sequence[str], data: Any) -> tuple[dict, dict]:
        """A prompt (`text`) in, or a conversation (`messages`) for chat models; text out."""
        if data.messages_column is not None:
            return {"messages": [{"role": "string", "content": "string"}]}, {"generated": "string"}
        return {"text": "string"}, {"generated": "string"}

    def summary(self, metrics: dict[str, float]) -> str:
        """Loss and perplexity, then exact match and ROUGE-L of the generations."""
        return lm_serving.summary(metrics)

    def report_rows(self, metrics: dict[str, float], names: Sequence[str]) -> list[list[str]]:
        """The evaluation report's section: one row per metric."""
        return lm_serving.report_rows(metrics)
