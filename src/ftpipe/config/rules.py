"""Which strategy works with which ZeRO stage, precision and model head: one table.

The config schema refuses impossible ZeRO stages at load, the training core refuses a
precision once it is resolved on the hardware, and the strategies read whether gradient
checkpointing applies and whether a new head is needed: all three read `RULES`, so a rule is
written once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class StrategyRules:
    """What one strategy needs.

    Attributes:
        max_zero_stage: The highest `train.zero_stage` it runs under.
        zero_reason: Why a higher stage is refused, and `zero_fix` what to set instead.
        needs_fp32: It trains only in fp32; `fp32_reason` says why.
        gradient_checkpointing: `train.gradient_checkpointing` applies to it.
        needs_new_head: It trains a new classification head, so the task must have one.
        slow_start: It trains a few fresh weights (adapters, virtual tokens) that need time
            to move the model, so its early evaluations understate where it ends; a sweep
            gives its trials more training before the first cut.
        merge_refusal: Why `strategy.merge_adapter: true` is refused: its adapter cannot be
            folded into the base weights (empty: it can, or there is no adapter).
        packs: `data.packing` applies to it (virtual tokens extend a 2D attention mask, and a
            packed batch carries a 4D one).
    """

    max_zero_stage: int = 3
    zero_reason: str = ""
    zero_fix: str = ""
    needs_fp32: bool = False
    fp32_reason: str = ""
    gradient_checkpointing: bool = True
    needs_new_head: bool = False
    slow_start: bool = False
    merge_refusal: str = ""
    packs: bool = True


_PROMPT_LEARNING = StrategyRules(
    max_zero_stage=2,
    # Virtual-token embeddings are not partitioned consistently under ZeRO-3; refuse rather
    # than train something that silently diverges across ranks.
    zero_reason="prompt-learning methods are fragile under ZeRO-3 partitioning",
    zero_fix="train.zero_stage=2 (or lower), or strategy.name=lora",
    slow_start=True,
    merge_refusal="prompt learning adds virtual tokens, not weight deltas, so there is nothing "
    "to fold into the base weights: the export keeps the adapter",
    packs=False,
)

RULES: dict[str, StrategyRules] = {
    "lora": StrategyRules(slow_start=True),
    "ia3": StrategyRules(slow_start=True),
    "qlora": StrategyRules(
        # Each rank loads the whole 4-bit base onto its GPU; ZeRO-3 would partition parameters
        # that bitsandbytes packs and unpacks itself.
        max_zero_stage=2,
        zero_reason="its 4-bit base weights are loaded whole on each GPU, and ZeRO-3 cannot "
        "partition bitsandbytes' packed weights",
        zero_fix="train.zero_stage=2 (or lower), or strategy.name=lora",
        slow_start=True,
        merge_refusal="its base weights are 4-bit, so merging would round the trained update "
        "into them and the merged model would need bitsandbytes and a GPU to load: the export "
        "keeps the adapter, which loads onto the full-precision base",
    ),
    # PEFT's prefix tuning feeds past key values, which gradient checkpointing cannot recompute;
    # p-tuning v2 is prefix tuning with projected prompts.
    "prefix": replace(_PROMPT_LEARNING, gradient_checkpointing=False),
    "p-tuning-v2": replace(_PROMPT_LEARNING, gradient_checkpointing=False),
    "p-tuning": _PROMPT_LEARNING,
    "prompt-tuning": _PROMPT_LEARNING,
    "gradual-unfreezing": StrategyRules(
        # DeepSpeed leaves frozen parameters out of its optimizer for good, so blocks unfrozen
        # later would silently never update.
        max_zero_stage=0,
        zero_reason="DeepSpeed ZeRO drops frozen parameters from its optimizer, so "
        "later-unfrozen blocks would never update",
        zero_fix="train.zero_stage=0",
        needs_fp32=True,
        fp32_reason="DeepSpeed's bf16/fp16 optimizers keep only the parameters trainable at the "
        "start, so blocks unfrozen later would never update.",
    ),
    "feature-extraction": StrategyRules(
        # The head is all that trains, and the cache needs the whole backbone on each rank.
        max_zero_stage=2,
        zero_reason="only the small head trains, so there is nothing to partition",
        zero_fix="train.zero_stage=0",
        needs_new_head=True,
    ),
}
"""Strategies with restrictions; every other strategy runs everywhere."""


def rules_for(strategy: str) -> StrategyRules:
    """The rules of a strategy (none for unrestricted ones)."""
    return RULES.get(strategy, StrategyRules())


def zero_stage_problem(strategy: str, zero_stage: int) -> str | None:
    """Why `strategy` cannot run at `zero_stage`, or None if it can."""
    rules = rules_for(strategy)
    if zero_stage <= rules.max_zero_stage:
        return None
    return (
        f"strategy.name={strategy} cannot run with train.zero_stage={zero_stage}: "
        f"{rules.zero_reason}. Use {rules.zero_fix}"
    )


def merge_problem(strategy: str, merge_adapter: bool | None) -> str | None:
    """Why `strategy.merge_adapter` cannot be honoured for `strategy`, or None if it can."""
    refusal = rules_for(strategy).merge_refusal
    if merge_adapter is not True or not refusal:
        return None
    return (
        f"strategy.merge_adapter=true cannot apply to strategy.name={strategy}: {refusal}. "
        "Leave strategy.merge_adapter unset (or false)."
    )


def packing_problem(strategy: str, packing: bool) -> str | None:
    """Why `data.packing` cannot apply to `strategy`, or None if it can."""
    if not packing or rules_for(strategy).packs:
        return None
    return (
        f"data.packing=true cannot apply to strategy.name={strategy}: its virtual tokens are "
        "prepended to each sequence, and packed rows need a block mask of their own. Set "
        "data.packing=false, or use strategy.name=lora."
    )


def precision_problem(strategy: str, precision: str) -> str | None:
    """Why `strategy` cannot train in `precision`, or None if it can."""
    rules = rules_for(strategy)
    if not rules.needs_fp32 or precision == "fp32":
        return None
    return (
        f"strategy.name={strategy} needs fp32, but this run trains in {precision}: "
        f"{rules.fp32_reason} Set train.precision=fp32."
    )
