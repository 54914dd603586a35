"""Task heads on top of an encoder's hidden states."""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """RoBERTa-style sentence head on the first token.

    ``[batch, seq, hidden] -> [batch, num_labels]`` (``num_labels=1`` for regression):
    dropout → dense → tanh → dropout → out.
    """

    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden_states[:, 0])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out(x)
