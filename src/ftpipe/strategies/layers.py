"""Find the embeddings, the transformer blocks and the head of any Hugging Face model.

Strategies need three things from a model: what to freeze first (the embeddings), what to
freeze or unfreeze in order (the blocks, bottom to top), and what is new (the head). This is
found from the model itself rather than a per-architecture table:

* the backbone is `model.<base_model_prefix>` (bert, roberta, distilbert, deberta,
  transformer, model, ...);
* the blocks are the backbone's `nn.ModuleList` with `config.num_hidden_layers` entries;
* the embeddings are the backbone child that holds `get_input_embeddings()` (BERT-style
  `embeddings`), or, where the embedding tables are direct children (GPT-2's wte/wpe, Llama's
  embed_tokens), every direct `nn.Embedding` child;
* the head is every parameter outside the backbone (classifier, score, pre_classifier, ...).

Everything else in the backbone (a pooler, a final norm) sits above the blocks and trains
with the top of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ftpipe.errors import FtpipeError


def true_shape(parameter: nn.Parameter) -> tuple[int, ...]:
    """A parameter's full shape, also when ZeRO-3 holds only a shard of it on this rank."""
    return tuple(getattr(parameter, "ds_shape", parameter.shape))


def true_numel(parameter: nn.Parameter) -> int:
    """A parameter's full element count, also under ZeRO-3 sharding."""
    return int(getattr(parameter, "ds_numel", parameter.numel()))


@dataclass(frozen=True)
class Layout:
    """The parts of a model that strategies act on, each as (qualified name, module)."""

    backbone_name: str
    embeddings: tuple[tuple[str, nn.Module], ...]
    blocks: tuple[tuple[str, nn.Module], ...]
    head: tuple[tuple[str, nn.Module], ...]

    @property
    def num_blocks(self) -> int:
        """Number of transformer blocks."""
        return len(self.blocks)


def discover(model: nn.Module) -> Layout:
    """Return the layout of a transformers model.

    Raises:
        FtpipeError: Naming what could not be found, if the model is not a supported shape.
    """
    kind = type(model).__name__
    prefix = getattr(model, "base_model_prefix", "")
    backbone = getattr(model, prefix, None) if prefix else None
    if not isinstance(backbone, nn.Module):
        raise FtpipeError(
            f"Cannot find the backbone of {kind}: it has no submodule named by its "
            f"base_model_prefix ({prefix!r}). ftpipe supports transformers models with a task "
            "head on a base model (for example AutoModelForSequenceClassification)."
        )
    blocks_name, blocks = _find_blocks(model, backbone, prefix)
    embeddings = _find_embeddings(backbone, prefix, blocks)
    head = tuple((name, module) for name, module in model.named_children() if name != prefix)
    if not any(true_numel(p) for _, m in head for p in m.parameters()):
        raise FtpipeError(
            f"Cannot find the head of {kind}: it has no parameters outside {prefix!r}. Load the "
            "model with a task head, for example AutoModelForSequenceClassification."
        )
    return Layout(
        backbone_name=prefix,
        embeddings=embeddings,
        blocks=tuple((f"{blocks_name}.{i}", block) for i, block in enumerate(blocks)),
        head=head,
    )


def _find_blocks(model: nn.Module, backbone: nn.Module, prefix: str) -> tuple[str, nn.ModuleList]:
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [
        (name, module)
        for name, module in backbone.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0
    ]
    matching = [(n, m) for n, m in candidates if expected is None or len(m) == expected]
    if not matching:
        found = ", ".join(f"{prefix}.{n} ({len(m)})" for n, m in candidates) or "none"
        raise FtpipeError(
            f"Cannot find the transformer blocks of {type(model).__name__}: no module list in "
            f"{prefix!r} has config.num_hidden_layers={expected} entries (module lists: {found})."
        )
    # Lists inside a matching list (per-layer heads, experts) are not block stacks.
    outer = [(n, m) for n, m in matching if not any(n.startswith(f"{o}.") for o, _ in matching)]
    if len(outer) > 1:
        found = ", ".join(f"{prefix}.{n}" for n, _ in outer)
        raise FtpipeError(
            f"{type(model).__name__} has several block stacks ({found}), as encoder-decoder "
            "models do. ftpipe supports encoder-only and decoder-only models."
        )
    name, blocks = outer[0]
    return f"{prefix}.{name}", blocks


def _find_embeddings(
    backbone: nn.Module, prefix: str, blocks: nn.ModuleList
) -> tuple[tuple[str, nn.Module], ...]:
    token_embedding = backbone.get_input_embeddings()
    found: list[tuple[str, nn.Module]] = []
    for name, child in backbone.named_children():
        holds_tokens = any(m is token_embedding for m in child.modules())
        holds_blocks = any(m is blocks for m in child.modules())
        if holds_tokens and not holds_blocks and child is not token_embedding:
            found.append((f"{prefix}.{name}", child))
    if not found:
        found = [
            (f"{prefix}.{name}", child)
            for name, child in backbone.named_children()
            if isinstance(child, nn.Embedding)
        ]
    if not found:
        raise FtpipeError(
            f"Cannot find the embeddings of {type(backbone).__name__}: get_input_embeddings() "
            "is not one of its children or inside one."
        )
    # Other embedding tables outside the blocks (DeBERTa's relative positions) are embeddings
    # too: pretrained, low-level, frozen with them.
    inside = {id(m) for _, part in found for m in part.modules()}
    inside |= {id(m) for m in blocks.modules()}
    found += [
        (f"{prefix}.{name}", module)
        for name, module in backbone.named_modules()
        if isinstance(module, nn.Embedding) and id(module) not in inside
    ]
    return tuple(found)
