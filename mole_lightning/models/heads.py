"""Task heads on top of an encoder's hidden states."""

from __future__ import annotations

import torch
from torch import nn

from mole_lightning.errors import ConfigError

POOLINGS = ("first", "mean")
"""Values of ``method.head_pooling``."""


class ClassificationHead(nn.Module):
    """RoBERTa-style sentence head on the first token, or on the mean of the tokens.

    ``[batch, seq, hidden] -> [batch, num_labels]`` (``num_labels=1`` for regression):
    pool → dropout → dense → tanh → dropout → out.

    Args:
        init_std: ``None``: PyTorch's default ``nn.Linear`` init; a number: weights from
            ``N(0, init_std)`` and zero biases (transformers' init of RoBERTa's head,
            ``initializer_range`` 0.02, as the MoLEx authors' code has it).
        pooling: ``"first"`` (the first token: CLS / ``<s>``, RoBERTa's head) or
            ``"mean"`` (the mean over the attention mask's tokens, as sentence-transformers
            pools MiniLM).
    """

    def __init__(
        self,
        hidden: int,
        num_labels: int,
        dropout: float = 0.1,
        init_std: float | None = None,
        pooling: str = "first",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(
                f"method.head_pooling={pooling!r} is not a head pooling; valid: {', '.join(POOLINGS)}"
            )
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, num_labels)
        if init_std is not None:
            for linear in (self.dense, self.out):
                nn.init.normal_(linear.weight, std=init_std)
                nn.init.zeros_(linear.bias)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``hidden_states [batch, seq, hidden]``, ``attention_mask [batch, seq]`` (1 on
        real tokens; needed by ``mean``) -> ``[batch, num_labels]``."""
        if self.pooling == "first":
            pooled = hidden_states[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
            pooled = (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        x = self.dropout(pooled)
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out(x)
