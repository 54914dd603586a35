"""The per-layer gate: one input-independent logit per expert."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SAMPLING = ("per_example", "per_batch", "none")


class ExpertGate(nn.Module):
    """Mixture weights ``[batch, experts]`` from a logit vector (initialised to zero).

    Training: ``softmax((logits + g) / temperature)`` at the ``temperature`` buffer (a 0-d
    tensor, set in place by ``MoleAdapters.temperature``, so a compiled forward reads
    the new value without recompiling), with Gumbel noise ``g`` drawn per example
    (``sampling="per_example"``, the paper), once per batch (``"per_batch"``) or not at
    all (``"none"``: ``g = 0``); with ``hard`` the forward value is the one-hot argmax of
    the sample and the gradient is the soft sample's (straight-through). Evaluation: the
    same deterministic weights for every example, ``softmax(logits)`` or, with
    ``eval_mode="argmax"``, one-hot of the argmax.
    """

    def __init__(
        self,
        num_experts: int,
        temperature: float,
        hard: bool,
        eval_mode: str,
        sampling: str = "per_example",
    ) -> None:
        super().__init__()
        if sampling not in SAMPLING:
            raise ValueError(f"gate sampling {sampling!r}; valid: {', '.join(SAMPLING)}")
        self.logits = nn.Parameter(torch.zeros(num_experts))
        self.register_buffer("temperature", torch.tensor(float(temperature)), persistent=False)
        self.hard = hard
        self.eval_mode = eval_mode
        self.sampling = sampling

    def importance(self) -> torch.Tensor:
        """``[experts]`` softmax of the logits: each expert's importance score."""
        return torch.softmax(self.logits, dim=-1)

    def forward(self, batch_size: int) -> torch.Tensor:
        """Returns mixture weights ``[batch_size, experts]`` (rows sum to 1)."""
        if not self.training:
            weights = self.importance()
            if self.eval_mode == "argmax":
                weights = F.one_hot(self.logits.argmax(), len(self.logits)).to(weights.dtype)
            return weights.expand(batch_size, -1)
        if self.sampling == "none":
            gumbels = torch.zeros(batch_size, len(self.logits), device=self.logits.device)
        else:
            draws = batch_size if self.sampling == "per_example" else 1
            uniform = torch.rand(draws, len(self.logits), device=self.logits.device)
            gumbels = -torch.log(-torch.log(uniform.clamp(1e-10, 1.0 - 1e-7)))
            gumbels = gumbels.expand(batch_size, -1)
        soft = torch.softmax((self.logits + gumbels) / self.temperature, dim=-1)
        if not self.hard:
            return soft
        hard = F.one_hot(soft.argmax(-1), len(self.logits)).to(soft.dtype)
        return hard - soft.detach() + soft

    def restrict(self, keep: list[int]) -> None:
        """Keeps only the logits of the experts at positions ``keep`` (a new parameter)."""
        self.logits = nn.Parameter(self.logits.detach()[keep].clone())
