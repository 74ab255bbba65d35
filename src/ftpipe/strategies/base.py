"""The strategy registry and what every strategy returns.

A strategy takes a freshly loaded transformers model and decides what trains: it sets
`requires_grad`, and PEFT strategies wrap the model. One small module per strategy registers
itself here, so adding one means adding one file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from ftpipe.config.rules import rules_for
from ftpipe.config.schema import Config
from ftpipe.errors import FtpipeError
from ftpipe.strategies.layers import Layout, discover
from ftpipe.tasks import get_task

if TYPE_CHECKING:  # the module registers itself here, so it cannot be imported at load time
    from ftpipe.strategies.gradual_unfreezing import UnfreezeSchedule


@dataclass(frozen=True)
class Prepared:
    """A model made ready to train by a strategy.

    Attributes:
        model: The model to optimise (a PeftModel for PEFT strategies).
        layout: Embeddings, blocks and head of the underlying transformers model.
        pretrained: ids of the parameters that came with the pretrained backbone; every other
            parameter (head, adapters, virtual tokens) is new and gets `train.head_lr`.
        gradient_checkpointing: Whether the training loop may turn checkpointing on.
        unfreeze: For gradual unfreezing, the schedule the loop applies before each
            optimizer step.
    """

    model: nn.Module
    layout: Layout
    pretrained: frozenset[int]
    gradient_checkpointing: bool
    unfreeze: UnfreezeSchedule | None = None


StrategyFn = Callable[[nn.Module, Layout, Config], nn.Module]

STRATEGIES: dict[str, StrategyFn] = {}
"""Strategy name (as in `strategy.name`) to the function that applies it."""


def register(name: str) -> Callable[[StrategyFn], StrategyFn]:
    """Register a strategy function under `name`."""

    def add(fn: StrategyFn) -> StrategyFn:
        STRATEGIES[name] = fn
        return fn

    return add


def prepare(model: nn.Module, config: Config) -> Prepared:
    """Apply `config.strategy` to a freshly loaded model.

    Raises:
        FtpipeError: If the strategy is `auto` (not yet resolved) or cannot apply to the model.
    """
    name = config.strategy.name
    if name not in STRATEGIES:
        raise FtpipeError(
            f"strategy.name={name} must be resolved before training: run `ftpipe recommend` "
            f"or set one of {', '.join(sorted(STRATEGIES))}."
        )
    task, rules = get_task(config.data.task), rules_for(name)
    task.check_strategy(name)
    if rules.needs_new_head and not task.new_head:
        raise FtpipeError(
            f"strategy.name={name} trains a new classification head, but data.task={task.name} "
            f"trains {type(model).__name__}'s pretrained output layer. Use one of "
            f"{', '.join(s for s in sorted(STRATEGIES) if not rules_for(s).needs_new_head)}."
        )
    layout = discover(model)
    # A new head trains at `train.head_lr`; a pretrained output layer (a language model's, often
    # tied to the embeddings) trains at the backbone's top learning rate.
    pretrained_parts = [getattr(model, layout.backbone_name)]
    if not task.new_head:
        pretrained_parts += [m for _, m in layout.head]
    pretrained = frozenset(id(p) for part in pretrained_parts for p in part.parameters())
    prepared_model = STRATEGIES[name](model, layout, config)
    unfreeze = getattr(prepared_model, "ftpipe_unfreeze", None)
    return Prepared(
        model=prepared_model,
        layout=layout,
        pretrained=pretrained,
        gradient_checkpointing=config.train.gradient_checkpointing and rules.gradient_checkpointing,
        unfreeze=unfreeze,
    )


def set_trainable(modules: Iterable[nn.Module], trainable: bool) -> None:
    """Set `requires_grad` on every parameter of the modules."""
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(trainable)
