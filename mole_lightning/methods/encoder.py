"""A backbone with a PEFT method applied: the one object the LightningModules train."""

from __future__ import annotations

import torch
from torch import nn

from mole_lightning.graphs.batch import WordGraphBatch


class TunedEncoder(nn.Module):
    """Backbone plus the modules a method added to it.

    Attributes:
        backbone: the transformers model, modified in place by the method (LoRA layers,
            adapter hooks, MoLEx routing).
        method: the method's name.
        parts: the modules the method attached (adapters, MoLE experts, MoLEx routers);
            a part may define ``set_graphs(WordGraphBatch)`` (it reads word graphs) and
            ``aux_loss() -> Tensor | None`` (an extra training loss).
    """

    def __init__(self, backbone: nn.Module, method: str, parts: dict[str, nn.Module] | None = None):
        super().__init__()
        for name, p in backbone.named_parameters():
            if name.startswith("pooler.") or ".pooler." in name:
                p.requires_grad_(False)  # head.pooling=pooler reads it frozen
        self.backbone = backbone
        self.method = method
        self.parts = nn.ModuleDict(parts or {})

    @property
    def graph_kinds(self) -> list[str]:
        """Word-graph kinds the parts read (``[]``: batches need no graphs)."""
        kinds: list[str] = []
        for part in self.parts.values():
            kinds.extend(k for k in getattr(part, "graph_kinds", []) if k not in kinds)
        return kinds

    @property
    def needs_graphs(self) -> bool:
        """Whether a batch must carry word graphs for this method."""
        return bool(self.graph_kinds)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        word_graphs: WordGraphBatch | None = None,
    ) -> torch.Tensor:
        """Returns the last hidden states ``[batch, seq, hidden]``."""
        for part in self.parts.values():
            if hasattr(part, "set_graphs"):
                part.set_graphs(word_graphs)
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return out.last_hidden_state

    def compile_backbone(self, mode: str = "default", **options) -> None:
        """Compiles the backbone's forward in place with ``torch.compile``.

        The parts' ``set_graphs`` runs before it, uncompiled (it checks and prepares the
        batch's graphs), so the compiled region holds only the layers, the adapters and
        the routing. ``mode``: ``"default"``, ``"reduce-overhead"`` (CUDA graphs on a GPU)
        or ``"max-autotune"``; ``options`` go to ``torch.compile`` (``backend``,
        ``fullgraph``, ...).
        """
        self.backbone.compile(mode=None if mode == "default" else mode, **options)

    def aux_loss(self) -> torch.Tensor | None:
        """Sum of the parts' extra losses of the last forward, or ``None``."""
        losses = [p.aux_loss() for p in self.parts.values() if hasattr(p, "aux_loss")]
        losses = [loss for loss in losses if loss is not None]
        return torch.stack(losses).sum() if losses else None

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def freeze(module: nn.Module) -> None:
    """Sets ``requires_grad=False`` on every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(False)
