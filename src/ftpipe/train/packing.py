"""`data.packing`: a micro-batch's language-model rows in fewer, fuller sequences.

Each micro-batch holds the rows an unpacked run would read; packing only changes their layout.
First-fit decreasing finds how many sequences of at most `data.max_length` tokens the rows need;
the rows are then spread over that many, longest first into the shortest, so the sequences come
out of even length and little of the batch's width is padding. Within a sequence:

- position ids restart at 0 at each row, so a row sees the positions it would see alone;
- attention is block-diagonal and causal: a token attends to the earlier tokens of its own row
  only. The mask goes to the model as a 4D mask, which transformers' masking_utils hands to the
  attention unchanged. transformers could infer the blocks from the restarting position ids,
  but only without a KV cache, and a model in training whose config sets `use_cache` (Llama's
  default) builds one, so it silently falls back to plain causal attention across rows;
- the first target of each row is -100: the model shifts labels by one, so that target would be
  predicted from the previous row's last token. Unpacked, nothing precedes it and it is never
  predicted, so the loss sums exactly the unpacked terms over the same count of targets;
- the tail of a sequence shorter than the batch's longest is padding, in a block of its own, so
  that no query attends to nothing (SDPA returns NaN for an empty mask row).

Evaluation stays unpacked: its evaluator scores logits row by row.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ftpipe.errors import ConfigError

MASKS = {"sdpa": False, "eager": True}
"""Attention implementations packing supports, and whether each adds its mask to the scores
(a float mask, -inf where blocked) rather than taking a boolean one (True where attended)."""

PACKED_INPUTS = frozenset({"input_ids", "attention_mask", "labels"})
"""What a packed batch is built from; any other input would be silently dropped (TRL#3705)."""


def pack_rows(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Row positions grouped into packs of at most `capacity` tokens, of even length.

    First-fit decreasing sets the number of packs; the rows are then dealt longest first to
    the shortest pack, which keeps to `capacity` nearly always (else first fit's packs stand).
    Deterministic for given lengths; a row longer than `capacity` gets a pack of its own.
    """
    by_length = np.argsort(-lengths, kind="stable").tolist()
    packs: list[list[int]] = []
    room: list[int] = []
    for row in by_length:
        length = int(lengths[row])
        fits = next((p for p, free in enumerate(room) if length <= free), None)
        if fits is None:
            packs.append([row])
            room.append(capacity - length)
        else:
            packs[fits].append(row)
            room[fits] -= length
    even: list[list[int]] = [[] for _ in packs]
    loads = [(0, p) for p in range(len(packs))]  # a heap: the shortest pack, then the first
    for row in by_length:
        load, p = heapq.heappop(loads)
        even[p].append(row)
        heapq.heappush(loads, (load + int(lengths[row]), p))
    return even if max(load for load, _ in loads) <= capacity else packs


def padding_share(
    lengths: np.ndarray, micro_batches: Iterable[np.ndarray], capacity: int | None = None
) -> float:
    """The share of computed tokens that are padding over these micro-batches.

    Args:
        lengths: Token count of every row of the split.
        micro_batches: Row indices of each micro-batch.
        capacity: Tokens per packed sequence; None for the unpacked layout (each micro-batch
            padded to its longest row).
    """
    real = computed = 0
    for rows in micro_batches:
        sizes = lengths[rows]
        real += int(sizes.sum())
        if capacity is None:
            computed += len(sizes) * int(sizes.max())
        else:
            packs = pack_rows(sizes, capacity)
            computed += len(packs) * max(int(sizes[pack].sum()) for pack in packs)
    return 1.0 - real / max(computed, 1)


@dataclass(frozen=True)
class Padding:
    """The share of computed training tokens that are padding, packed and unpacked.

    Attributes:
        packed: With `data.packing`.
        unpacked: With the same micro-batches padded to their longest row.
    """

    packed: float
    unpacked: float

    def fields(self) -> dict[str, float]:
        """The shares as metrics fields."""
        return {"padding_share": self.packed, "padding_share_unpacked": self.unpacked}

    def describe(self) -> str:
        """One log line: both shares and how many fewer tokens packing computes."""
        # The real tokens are the same both ways, so the computed ones scale as 1 / (1 - share).
        fewer = (1.0 - self.packed) / max(1.0 - self.unpacked, 1e-9)
        return (
            f"Packing: padding is {self.packed:.1%} of the tokens computed in the first epoch, "
            f"against {self.unpacked:.1%} unpacked ({fewer:.2f}x fewer tokens computed)"
        )


@dataclass(frozen=True)
class Packer:
    """Packs a micro-batch's padded rows and targets (see the module docstring).

    Attributes:
        capacity: Tokens per packed sequence (`data.max_length`).
        pad_id: Token id of the padding after the last row of a sequence.
        additive: The attention adds the mask to its scores (eager) instead of taking a
            boolean mask (SDPA).
    """

    capacity: int
    pad_id: int
    additive: bool = False

    @classmethod
    def for_model(cls, model: Any, strategy: str, capacity: int, pad_id: int) -> Packer:
        """The packer for this (strategy-wrapped) model, once it is known to honour packing.

        Raises:
            ConfigError: If the model's attention takes no 4D mask, its sliding window would
                cut rows that it does not cut unpacked, or the strategy prepends virtual
                tokens (which need a 2D mask).
        """
        peft_config = getattr(model, "active_peft_config", None)
        if peft_config is not None and peft_config.is_prompt_learning:
            raise ConfigError(
                f"data.packing cannot work with strategy.name={strategy}: its virtual tokens "
                "extend a 2D attention mask, and a packed batch carries a 4D one that keeps each "
                "row's attention to itself. Use strategy.name=lora (or full), or remove "
                "data.packing."
            )
        attention = model.config._attn_implementation
        if attention not in MASKS:
            raise ConfigError(
                f"data.packing needs {' or '.join(MASKS)} attention, and model.name loads with "
                f"{attention!r}, which takes no 4D block mask. Use a model that supports SDPA, "
                "or remove data.packing."
            )
        window = getattr(model.config, "sliding_window", None)
        if window is not None and capacity > window:
            raise ConfigError(
                f"data.packing: the model attends within a sliding window of {window} tokens, "
                f"shorter than data.max_length={capacity}, and the packed mask keeps whole rows. "
                f"Set data.max_length to at most {window}, or remove data.packing."
            )
        return cls(capacity, pad_id, MASKS[attention])

    def pack(self, tensors: dict[str, torch.Tensor], lengths: np.ndarray) -> dict[str, Any]:
        """Packed `input_ids`, `position_ids`, 4D `attention_mask` and `labels`.

        Args:
            tensors: The micro-batch unpacked: right-padded `input_ids`, their 2D
                `attention_mask`, and the task's `labels`.
            lengths: Token count of each of its rows.
        """
        if set(tensors) != PACKED_INPUTS:
            raise ValueError(f"Cannot pack {sorted(tensors)}: packing builds {PACKED_INPUTS}")
        packs = pack_rows(lengths, self.capacity)
        width = max(int(lengths[pack].sum()) for pack in packs)
        ids = torch.full((len(packs), width), self.pad_id, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        positions = torch.zeros_like(ids)
        blocks = torch.zeros_like(ids)
        for p, pack in enumerate(packs):
            start = 0
            for block, row in enumerate(pack):
                length = int(lengths[row])
                end = start + length
                ids[p, start:end] = tensors["input_ids"][row, :length]
                # The row's first target stays -100: see the module docstring.
                labels[p, start + 1 : end] = tensors["labels"][row, 1:length]
                positions[p, start:end] = torch.arange(length)
                blocks[p, start:end] = block
                start = end
            positions[p, start:] = torch.arange(width - start)
            blocks[p, start:] = len(pack)
        return {"input_ids": ids, "position_ids": positions,
                "attention_mask": self.mask(blocks), "labels": labels}  # fmt: skip

    def mask(self, blocks: torch.Tensor) -> torch.Tensor:
        """The block-diagonal causal mask [packs, 1, width, width] of each token's block."""
        width = blocks.shape[1]
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        allowed = (blocks.unsqueeze(2) == blocks.unsqueeze(1)) & causal
        if not self.additive:
            return allowed.unsqueeze(1)
        blocked = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
        return blocked.unsqueeze(1)
