"""The bottleneck adapter: the ``adapter`` method's module and MoLE's MLP expert."""

from __future__ import annotations

import torch
from torch import nn

from mole_lightning.methods.adapter.config import AdapterConfig


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
