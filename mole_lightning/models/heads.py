"""Task heads on top of an encoder's hidden states."""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """RoBERTa-style sentence head on the first token.

    ``[batch, seq, hidden] -> [batch, num_labels]`` (``num_labels=1`` for regression):
    dropout → dense → tanh → dropout → out.

    Args:
        init_std: ``None``: PyTorch's default ``nn.Linear`` init; a number: weights from
            ``N(0, init_std)`` and zero biases (transformers' init of RoBERTa's head,
            ``initializer_range`` 0.02, as the MoLEx authors' code has it).
    """

    def __init__(
        self, hidden: int, num_labels: int, dropout: float = 0.1, init_std: float | None = None
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, num_labels)
        if init_std is not None:
            for linear in (self.dense, self.out):
                nn.init.normal_(linear.weight, std=init_std)
                nn.init.zeros_(linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden_states[:, 0])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out(x)
