"""The bottleneck adapter: the ``adapter`` method and MoLE's MLP expert."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AdapterConfig:
    """Settings of a parallel bottleneck adapter in every layer.

    Attributes:
        bottleneck: size of the down-projection.
        dropout: dropout on the adapter's output.
        scaling: factor on the adapter's output (the MoLE authors use 4.0).
        layer_norm: apply a LayerNorm to the input first (MoLE authors' MLP expert).
        zero_down_bias: the down-projection's bias starts at zero (the MoLE authors' MLP
            expert); ``False``: PyTorch's default ``nn.Linear`` init.
    """

    bottleneck: int = 64
    dropout: float = 0.1
    scaling: float = 1.0
    layer_norm: bool = False
    zero_down_bias: bool = False


class BottleneckAdapter(nn.Module):
    """``[batch, seq, hidden] -> [batch, seq, hidden]``: (LayerNorm) → down → ReLU → up.

    The up-projection starts at zero, so a freshly attached adapter leaves the backbone's
    output unchanged.
    """

    def __init__(self, hidden: int, cfg: AdapterConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden) if cfg.layer_norm else nn.Identity()
        self.down = nn.Linear(hidden, cfg.bottleneck)
        self.up = nn.Linear(cfg.bottleneck, hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.scaling = cfg.scaling
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        if cfg.zero_down_bias:
            nn.init.zeros_(self.down.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        h = self.up(torch.relu(self.down(self.norm(hidden_states))))
        return self.dropout(h) * self.scaling
