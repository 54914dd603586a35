"""Task heads on top of an encoder's hidden states."""

from __future__ import annotations

import torch
from torch import nn

from mole_lightning.errors import ConfigError

POOLINGS = ("first", "mean", "pooler")
"""Values of ``method.head_pooling``."""


def find_pooler(backbone: nn.Module) -> nn.Module | None:
    """The backbone's own pooler (BERT's ``pooler``: dense + tanh on the first token),
    wherever a method's wrapper put it; ``None`` when it has none (GPT-2)."""
    return next((m for n, m in backbone.named_modules() if n.rsplit(".", 1)[-1] == "pooler"), None)


class ClassificationHead(nn.Module):
    """RoBERTa-style sentence head on the first token or on the mean of the tokens, or
    transformers' ``BertForSequenceClassification`` head on the backbone's pooler.

    ``[batch, seq, hidden] -> [batch, num_labels]`` (``num_labels=1`` for regression):
    ``first``/``mean``: pool → dropout → dense → tanh → dropout → out (dense and out
    new and trained); ``pooler``: the backbone's pretrained pooler (dense → tanh on the
    first token, frozen, as a peft-wrapped ``*ForSequenceClassification`` keeps it) →
    dropout → out (only out new and trained).

    Args:
        init_std: ``None``: PyTorch's default ``nn.Linear`` init; a number: weights from
            ``N(0, init_std)`` and zero biases (transformers' init of RoBERTa's head,
            ``initializer_range`` 0.02, as the MoLEx authors' code has it).
        pooling: ``"first"`` (the first token: CLS / ``<s>``, RoBERTa's head),
            ``"mean"`` (the mean over the attention mask's tokens, as sentence-transformers
            pools MiniLM) or ``"pooler"`` (the backbone's pooler).
        pooler: the backbone's pooler module, for ``pooling="pooler"``.
    """

    def __init__(
        self,
        hidden: int,
        num_labels: int,
        dropout: float = 0.1,
        init_std: float | None = None,
        pooling: str = "first",
        pooler: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(
                f"method.head_pooling={pooling!r} is not a head pooling; valid: {', '.join(POOLINGS)}"
            )
        if pooling == "pooler" and pooler is None:
            raise ConfigError(
                "method.head_pooling=pooler: this backbone has no pooler (GPT-2 has none); "
                "use first or mean"
            )
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        # the backbone's module (frozen there), not a copy
        self.pooler = pooler if pooling == "pooler" else None
        self.dense = None if pooling == "pooler" else nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, num_labels)
        if init_std is not None:
            for linear in (m for m in (self.dense, self.out) if m is not None):
                nn.init.normal_(linear.weight, std=init_std)
                nn.init.zeros_(linear.bias)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``hidden_states [batch, seq, hidden]``, ``attention_mask [batch, seq]`` (1 on
        real tokens; needed by ``mean``) -> ``[batch, num_labels]``."""
        if self.pooler is not None:
            return self.out(self.dropout(self.pooler(hidden_states)))
        if self.pooling == "first":
            pooled = hidden_states[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
            pooled = (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        x = self.dropout(pooled)
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out(x)
