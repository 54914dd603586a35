"""Task heads on top of an encoder's hidden states, and their options (``head`` node)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mole_lightning.errors import ConfigError

POOLINGS = ("first", "mean", "pooler")
"""Values of ``head.pooling``."""


@dataclass
class HeadConfig:
    """Options of the task head (the ``head`` config group, ``conf/head/default.yaml``).

    Attributes:
        dropout: dropout in the head.
        pooling: what the head reads: the first token (``first``), the mean of the tokens
            (``mean``), or the backbone's pretrained pooler, frozen, then a linear layer
            (``pooler``).
        init_std: ``None``: PyTorch's default ``nn.Linear`` init of the head; a number:
            ``N(0, init_std)`` weights and zero biases (the MoLEx authors' RoBERTa head:
            0.02).
    """

    dropout: float = 0.1
    pooling: str = "first"
    init_std: float | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(
                f"head.pooling={self.pooling!r} is not a head pooling; valid: {', '.join(POOLINGS)}"
            )


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
        cfg: the head's options. ``init_std``: transformers' init of RoBERTa's head
            (``initializer_range`` 0.02, as the MoLEx authors' code has it); ``pooling``:
            ``"first"`` (CLS / ``<s>``, RoBERTa's head), ``"mean"`` (over the attention
            mask's tokens, as sentence-transformers pools MiniLM) or ``"pooler"``.
        pooler: the backbone's pooler module, for ``pooling="pooler"``.
    """

    def __init__(
        self, hidden: int, num_labels: int, cfg: HeadConfig, pooler: nn.Module | None = None
    ) -> None:
        super().__init__()
        if cfg.pooling == "pooler" and pooler is None:
            raise ConfigError(
                "head.pooling=pooler: this backbone has no pooler (GPT-2 has none); "
                "use first or mean"
            )
        self.pooling = cfg.pooling
        self.dropout = nn.Dropout(cfg.dropout)
        # the backbone's module (frozen there), not a copy
        self.pooler = pooler if cfg.pooling == "pooler" else None
        self.dense = None if cfg.pooling == "pooler" else nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, num_labels)
        if cfg.init_std is not None:
            for linear in (m for m in (self.dense, self.out) if m is not None):
                nn.init.normal_(linear.weight, std=cfg.init_std)
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
