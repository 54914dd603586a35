"""MoLE's experts: RGCN adapters over word graphs, and the MLP bottleneck adapter."""

from __future__ import annotations

import torch
from torch import nn

from mole_lightning.methods.adapter import BottleneckAdapter
from mole_lightning.methods.mole.config import GRAPH_EXPERTS, MoleConfig
from mole_lightning.methods.mole.context import MoleContext
from mole_lightning.methods.mole.rgcn import RelationalGraphConv


class GraphExpert(nn.Module):
    """``[batch, seq, hidden] -> [batch, seq, hidden]`` over the batch's ``kind`` word graphs.

    down-project → pool subwords to words → RGCN layers (ReLU between) → up-project →
    copy back to every subword of the word → dropout. Tokens without a word (special,
    padding) get zeros. The up-projection starts at zero, so a fresh expert is a no-op.
    """

    def __init__(self, kind: str, hidden: int, cfg: MoleConfig, context: MoleContext) -> None:
        super().__init__()
        self.kind = kind
        self.context = context
        self.down = nn.Linear(hidden, cfg.bottleneck)
        self.convs = nn.ModuleList(
            RelationalGraphConv(cfg.bottleneck, cfg.bottleneck, cfg.num_relations)
            for _ in range(cfg.rgcn_layers)
        )
        self.up = nn.Linear(cfg.bottleneck, hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        alignment = self.context.alignment(hidden_states)
        graph = self.context.graph(self.kind, hidden_states.device)
        words = alignment.pool(self.down(hidden_states))
        for i, conv in enumerate(self.convs):
            if i:
                words = torch.relu(words)
            words = conv(words, graph)
        return self.dropout(alignment.scatter(self.up(words)))


def build_expert(name: str, hidden: int, cfg: MoleConfig, context: MoleContext) -> nn.Module:
    """The expert called ``name`` (a graph kind or ``"mlp"``) for width ``hidden``."""
    if name in GRAPH_EXPERTS:
        return GraphExpert(name, hidden, cfg, context)
    return BottleneckAdapter(hidden, cfg.mlp_adapter())
