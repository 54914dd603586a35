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

    ``graph_expert="projected"`` (ours): down-project → pool subwords to words → RGCN
    layers at ``bottleneck`` (ReLU between) → LayerNorm → up-project → copy back to every
    subword of the word → dropout. With ``zero_init_up`` the up-projection starts at zero
    (a no-op). The LayerNorm keeps the up-projection's input at a fixed scale: each RGCN
    layer sums its relations' messages and the root term, so without it the word features
    grow ~3x per layer (and more as the RGCN weights train), the up-projection's updates
    are amplified as much, and at lr 1e-3 an early layer's expert outgrew the residual
    stream (output norm 34-41 against 13-15) and erased the sentence from the first
    token (docs/notes/2026-11-evidence-notebook.md, "MoLE: why it did not learn").

    ``graph_expert="direct"`` (the authors' latest code): pool subwords to words → ReLU →
    RGCN layers ``hidden → bottleneck → … → hidden``, each followed by ReLU and dropout →
    copy back to the subwords.

    Tokens without a word (special, padding) get zeros, or with
    ``wordless_tokens="identity"`` their input unchanged. With
    ``later_convs_single_relation`` the RGCN layers after the first read every edge as
    relation 0.
    """

    def __init__(self, kind: str, hidden: int, cfg: MoleConfig, context: MoleContext) -> None:
        super().__init__()
        self.kind = kind
        self.context = context
        self.direct = cfg.graph_expert == "direct"
        self.identity_wordless = cfg.wordless_tokens == "identity"
        self.single_relation_after_first = cfg.later_convs_single_relation
        self.dropout = nn.Dropout(cfg.dropout)
        if self.direct:
            widths = [hidden, *[cfg.bottleneck] * (cfg.rgcn_layers - 1), hidden]
            gain = nn.init.calculate_gain("relu")
        else:
            widths = [cfg.bottleneck] * (cfg.rgcn_layers + 1)
            gain = 1.0
            self.down = nn.Linear(hidden, cfg.bottleneck)
            self.norm = nn.LayerNorm(cfg.bottleneck)
            self.up = nn.Linear(cfg.bottleneck, hidden)
            if cfg.zero_init_up:
                nn.init.zeros_(self.up.weight)
                nn.init.zeros_(self.up.bias)
        self.convs = nn.ModuleList(
            RelationalGraphConv(widths[i], widths[i + 1], cfg.num_relations, gain, cfg.rgcn_init)
            for i in range(cfg.rgcn_layers)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        alignment = self.context.alignment(hidden_states)
        graph = self.context.graph(self.kind, hidden_states.device)
        if self.direct:
            words = torch.relu(alignment.pool(hidden_states))
            for i, conv in enumerate(self.convs):
                single = self.single_relation_after_first and i > 0
                words = self.dropout(torch.relu(conv(words, graph, single)))
            out = alignment.scatter(words)
        else:
            words = alignment.pool(self.down(hidden_states))
            for i, conv in enumerate(self.convs):
                if i:
                    words = torch.relu(words)
                words = conv(words, graph, self.single_relation_after_first and i > 0)
            out = self.dropout(alignment.scatter(self.up(self.norm(words))))
        if self.identity_wordless:
            out = torch.where(alignment.has_word(), out, hidden_states)
        return out


def build_expert(name: str, hidden: int, cfg: MoleConfig, context: MoleContext) -> nn.Module:
    """The expert called ``name`` (a graph kind or ``"mlp"``) for width ``hidden``."""
    if name in GRAPH_EXPERTS:
        return GraphExpert(name, hidden, cfg, context)
    return BottleneckAdapter(hidden, cfg.mlp_adapter())
