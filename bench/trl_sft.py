"""TRL's SFTTrainer on the rows bench/sft.py trains: the side-by-side baseline.

TRL is handed ftpipe's prepared token ids and labels (the assistant turns, -100 elsewhere), so
both train the very same tokens with the same targets, and what differs is only the trainer:
TRL's collator and packing (best-fit decreasing into padding-free sequences whose position ids
restart at each row) against ftpipe's loop. TRL is an optional extra: `pip install -e .[bench]`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class TrlRun:
    """One SFTTrainer run: its training seconds and the real tokens it trained."""

    seconds: float
    real_tokens: int


def trl_available() -> bool:
    """Whether TRL is installed (the `bench` extra)."""
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def trl_rows(split, task) -> list[dict[str, list[int]]]:
    """Each prepared row's token ids and labels, as TRL takes processed rows."""
    from ftpipe.train.batching import BatchSource

    source = BatchSource(split, 0, task)  # one row per batch: no padding to read
    rows = []
    for index in range(len(split)):
        labels = source.batch(np.array([index]), torch.device("cpu"))["labels"][0]
        rows.append({"input_ids": list(split.input_ids[index]), "labels": labels.tolist()})
    return rows


def run_trl(model_dir: Path, rows, *, packed: bool, config, output_dir: Path) -> TrlRun:
    """Train a fresh copy of the model in `model_dir` on `rows` with TRL's SFTTrainer.

    The settings follow `config` (ftpipe's run of the same layout): epochs, micro-batch,
    learning rate, max_length, seed. Nothing is saved, evaluated or logged to a tracker, and
    the time counted is `trainer.train`'s loop from its first batch to its last step, which
    like ftpipe's count includes building each batch.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class LoopClock(TrainerCallback):
        """Times the training loop, after the trainer's set-up and before its wrap-up."""

        def __init__(self) -> None:
            self.seconds, self._start = 0.0, 0.0

        def on_train_begin(self, args, state, control, **kwargs) -> None:
            self._start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs) -> None:
            self.seconds = time.perf_counter() - self._start

    arguments = SFTConfig(
        output_dir=str(output_dir), num_train_epochs=config.train.epochs,
        per_device_train_batch_size=config.train.micro_batch_size,
        learning_rate=config.train.lr, max_length=config.data.max_length, packing=packed,
        seed=config.seed, save_strategy="no", eval_strategy="no", report_to="none",
        logging_strategy="no", dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
        include_num_input_tokens_seen="non_padding", disable_tqdm=True,
        # As ftpipe's `train.precision: auto`: bf16 where the GPU has it, else fp32.
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    )  # fmt: skip
    clock = LoopClock()
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        args=arguments, train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[clock],
    )  # fmt: skip
    trainer.train()
    return TrlRun(clock.seconds, int(trainer.state.num_input_tokens_seen))
