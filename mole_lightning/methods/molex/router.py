"""Routers of MoLEx: sequence pooling, the linear and cosine gates, the balance loss."""

from __future__ import annotations

import math

import torch
from torch import nn

from mole_lightning.methods.molex.config import MolexConfig
from mole_lightning.utils.tensors import count_indices


def pool_sequences(hidden: torch.Tensor, valid: torch.Tensor, mode: str) -> torch.Tensor:
    """Pools each sequence into one router input.

    Args:
        hidden: ``[batch, seq, hidden]`` layer input.
        valid: ``[batch, seq]`` bool, True on non-padding tokens. A row with no valid
            token pools over all its tokens.
        mode: ``"mean"`` or ``"max"`` over valid tokens, or the ``"first"`` valid token.

    Returns:
        ``[batch, hidden]``.
    """
    valid = valid | ~valid.any(dim=1, keepdim=True)
    if mode == "first":
        first = valid.int().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    mask = valid.unsqueeze(-1)
    if mode == "max":
        return hidden.masked_fill(~mask, float("-inf")).amax(dim=1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).to(hidden.dtype)


class LinearRouter(nn.Module):
    """``[..., hidden] -> [..., candidates]`` logits of one linear gate."""

    def __init__(self, hidden: int, num_candidates: int, init_std: float) -> None:
        super().__init__()
        self.gate = nn.Linear(hidden, num_candidates)
        nn.init.normal_(self.gate.weight, std=init_std)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x.to(self.gate.weight.dtype))


class CosineRouter(nn.Module):
    """``[..., hidden] -> [..., candidates]`` cosine-similarity logits (tutel's
    ``CosineTopKGate``): ``cos(proj(x), e_j) / tau`` with a learned embedding ``e_j`` per
    candidate and a learned temperature ``tau`` (its inverse clamped at 100).

    The projection starts at N(0, ``init_std``) with a zero bias, the embeddings at
    N(0, ``embedding_init_std``) (``None``: ``init_std``; tutel and the authors: 0.01).
    The embeddings are normalised in the forward pass, so their init scale sets only how
    far one optimizer step turns them.

    ``norm_axis="sequence"`` (the authors' variant) L2-normalises ``proj(x)``
    ``[batch, seq, proj]`` along dim 1, the sequence, instead of the feature axis; the
    embeddings are normalised along their feature axis either way.
    """

    def __init__(
        self,
        hidden: int,
        num_candidates: int,
        proj_dim: int,
        init_std: float,
        init_temperature: float,
        norm_axis: str = "feature",
        embedding_init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.norm_dim = 1 if norm_axis == "sequence" else -1
        self.proj = nn.Linear(hidden, proj_dim)
        std = init_std if embedding_init_std is None else embedding_init_std
        self.embeddings = nn.Parameter(torch.randn(num_candidates, proj_dim) * std)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        nn.init.normal_(self.proj.weight, std=init_std)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = nn.functional.normalize(
            self.proj(x.to(self.proj.weight.dtype)), dim=self.norm_dim
        )
        embeddings = nn.functional.normalize(self.embeddings, dim=-1)
        scale = self.log_inv_temperature.clamp(max=math.log(100.0)).exp()
        return projected @ embeddings.t() * scale


def build_router(cfg: MolexConfig, hidden: int, num_candidates: int) -> nn.Module:
    """Returns the router ``cfg.router`` names."""
    if cfg.router == "cosine":
        return CosineRouter(
            hidden,
            num_candidates,
            cfg.router_proj_dim,
            cfg.router_init_std,
            cfg.cosine_init_temperature,
            cfg.cosine_norm_axis,
            cfg.cosine_embedding_init_std,
        )
    return LinearRouter(hidden, num_candidates, cfg.router_init_std)


def switch_balance_loss(probs: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer load-balancing loss ``n * sum_j f_j P_j`` (1.0 when uniform).

    Args:
        probs: ``[decisions, n]`` router probabilities.
        picks: ``[decisions, k]`` picked candidate positions in ``[0, n)``.

    Returns:
        A scalar; ``f_j`` (the fraction of picks that went to ``j``) carries no gradient,
        ``P_j`` (the mean probability of ``j``) does.
    """
    n = probs.shape[-1]
    fraction = count_indices(picks.flatten(), n).to(probs.dtype) / picks.numel()
    return n * (fraction * probs.mean(dim=0)).sum()


def batch_winner_balance_loss(probs: torch.Tensor, winner: torch.Tensor) -> torch.Tensor:
    """The authors' balance loss ``n * P_j`` at the batch's winning candidate ``j``.

    Their loss is ``n * sum_j f_j P_j`` with a count vector reset at every call and set
    at the winner only, so ``f`` is one-hot at ``j``.

    Args:
        probs: ``[tokens, n]`` router probabilities of every token (padding included).
        winner: scalar candidate position in ``[0, n)``.

    Returns:
        A scalar; gradient flows through ``P_j``.
    """
    return probs.shape[-1] * probs.mean(dim=0).gather(0, winner.reshape(1)).squeeze(0)
