"""Shared by the cases, the runner and the renderer: sizes, FLOPs, memory and the step clock."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(__file__).resolve().parent
LAUNCH = "bench/gpu"  # how the bench is started, relative to the repository root
LLAMA = {
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 20,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
}
TINY_LLAMA = {  # --smoke: exercises every code path on a CPU in seconds
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
PEAK_KEYS = ("peak_allocated_gib", "peak_reserved_gib")
LOOP_LOGGER = "ftpipe.train.loop"  # the core's progress records: `step %d/%d ...`


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes for this run: full, --quick (short runs, real sizes) or --smoke (tiny, CPU).

    Args:
        args: The parsed command line.

    Returns:
        The decoder config, sequence length, micro-batch, accumulation, warm-up and measured
        steps, and the SST-2 step cap (None: the full schedule).
    """
    smoke = args.smoke
    return {
        "llama": TINY_LLAMA if smoke else LLAMA,
        "seq": 64 if smoke else args.seq,
        "micro": 2 if smoke else args.micro,
        "accum": 1 if (smoke or args.quick) else args.accum,
        "warmup": 1 if smoke else args.warmup,
        "steps": 3 if smoke else (3 if args.quick else args.steps),
        "sst2_max_steps": 5 if smoke else (300 if args.quick else None),
    }


def llama_flops_per_token(llama: dict[str, int], seq: int) -> dict[str, float]:
    """Training FLOPs per token: 6N (matmul weights) plus attention scores (12·L·h·s).

    Args:
        llama: The decoder's LlamaConfig sizes (LLAMA or TINY_LLAMA).
        seq: Sequence length.

    Returns:
        matmul_params (N), dense (6N), attention, total, and total_causal (scores halved).
    """
    h, inter, layers = llama["hidden_size"], llama["intermediate_size"], llama["num_hidden_layers"]
    kv = h // llama["num_attention_heads"] * llama["num_key_value_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter  # q, o; k, v; gate, up, down
    matmul_params = layers * per_layer + h * llama["vocab_size"]  # + the output layer
    attention = 12 * layers * h * seq
    return {
        "matmul_params": matmul_params,
        "dense": 6 * matmul_params,
        "attention": attention,
        "total": 6 * matmul_params + attention,
        "total_causal": 6 * matmul_params + attention / 2,
    }


def peak_memory() -> dict[str, float]:
    """Peak allocated / reserved GPU memory so far, GiB (zeros without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return {"peak_allocated_gib": 0.0, "peak_reserved_gib": 0.0}
    return {
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
    }


class StepClock(logging.Handler):
    """Reads the core's progress records: step, loss and its own train-seconds clock.

    The loop logs `step %d/%d ... %.1f samples/s` with rate = rows / train_seconds; the raw
    record arguments give train_seconds exactly. Observes only: nothing in the core changes.
    """

    def __init__(self, global_batch: int) -> None:
        """Attach to the core's logger.

        Args:
            global_batch: Rows per optimizer step (turns the logged rate into seconds).
        """
        super().__init__(logging.INFO)
        self.global_batch = global_batch
        self.steps: list[dict[str, float]] = []
        logger = logging.getLogger(LOOP_LOGGER)
        logger.setLevel(logging.INFO)
        logger.addHandler(self)

    def close(self) -> None:
        """Detach from the core's logger."""
        logging.getLogger(LOOP_LOGGER).removeHandler(self)
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        """Record step, loss, train seconds and peak memory from a progress record."""
        if not str(record.msg).startswith("step %d/%d"):
            return
        done, _total, _epoch, loss, _lr, rate = record.args[:6]
        self.steps.append(
            {
                "step": done,
                "loss": float(loss),
                # rate = rows since the start (step 0 here: no resume) / train_seconds
                "train_seconds": done * self.global_batch / max(rate, 1e-12),
                **peak_memory(),
            }
        )

    def steady(self, warmup: int) -> tuple[int, float]:
        """(steps, seconds) from the end of step `warmup` to the last step."""
        marks = {s["step"]: s["train_seconds"] for s in self.steps}
        last = max(marks)
        return last - warmup, marks[last] - marks[warmup]


def random_rows(rows: int, seq: int, vocab: int, seed: int) -> list[list[int]]:
    """`rows` rows of `seq` random token ids in [3, vocab) (0-2 are pad, bos, eos)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(3, vocab, size=(rows, seq)).tolist()
