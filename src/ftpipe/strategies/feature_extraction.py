"""`feature-extraction`: the whole backbone is frozen and only a new linear head trains.

The cheapest strategy, and the right one when the pretrained features already separate the
classes (small data, similar domain). The model is a `PooledClassifier`: the frozen backbone,
the pooling the recommender's probe measured (mean for sentence encoders such as MiniLM, whose
CLS/pooler output separates far worse), and one linear layer. A tagging task keeps every
token's state instead (pooling `tokens`): the same linear layer then tags each token, as
`AutoModelForTokenClassification`'s head does. Because the backbone never changes, its
features can be computed once (ftpipe.data.features) and the same head trained on them:
`forward(features=...)` skips the backbone, so the training loop, the exported head and the
cache all share one module.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from ftpipe.config.schema import Config
from ftpipe.data.features import TOKENS, pool, pooling_for
from ftpipe.strategies.base import register, set_trainable
from ftpipe.strategies.layers import Layout


class PooledClassifier(nn.Module):
    """A frozen backbone, pooled, then one linear layer (on each token, with `tokens`).

    Args:
        backbone: The transformers base model (it returns `last_hidden_state`).
        pooling: `mean`, `cls`, `last` or `tokens` (see `ftpipe.data.features.pool`).
        num_labels: Classes of the linear head.
    """

    def __init__(self, backbone: nn.Module, pooling: str, num_labels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.config = backbone.config
        self.classifier = nn.Linear(backbone.config.hidden_size, num_labels)

    def train(self, mode: bool = True) -> PooledClassifier:
        """Set train mode on the head only."""
        # The backbone stays in eval mode: its dropout would make live features differ from
        # the cached ones, and a frozen backbone has nothing to regularise.
        super().train(mode)
        self.backbone.eval()
        return self

    def pooled(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The backbone's pooled features, [batch, hidden]: what the cache stores.

        With `tokens`, every token's: [batch, tokens, hidden].
        """
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        with torch.no_grad():
            hidden = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, **extra
            ).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput | TokenClassifierOutput:
        """Classify token ids (live backbone) or precomputed `features` (the cache).

        With `tokens`, labels are per token, and -100 marks a token that trains nothing.
        """
        if features is None:
            features = self.pooled(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(features.to(self.classifier.weight.dtype))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, -2), labels.flatten())
        output = TokenClassifierOutput if self.pooling == TOKENS else SequenceClassifierOutput
        return output(loss=loss, logits=logits)


@register("feature-extraction")
def feature_extraction(model: nn.Module, layout: Layout, config: Config) -> nn.Module:
    """Freeze the backbone; a linear classifier on its pooled (or per-token) features."""
    backbone = getattr(model, layout.backbone_name)
    set_trainable([backbone], False)
    return PooledClassifier(backbone, pooling_for(config, backbone), model.config.num_labels)
