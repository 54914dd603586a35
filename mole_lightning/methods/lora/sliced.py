"""LoRA on some output slices of a fused ``[q | k | v]`` projection (GPT-2's ``c_attn``).

peft adapts a fused projection as one matrix (q, k and v together). The MoLEx authors'
GPT-2 code (microsoft/LoRA's ``MergedLinear``) adapts only the query and value slices:
``y = x W + b + [s B_q A_q x, 0, s B_v A_v x]`` with ``s = lora_alpha / r``, ``A``
Kaiming-uniform and ``B`` zero at init, dropout on ``x`` before ``A``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mole_lightning.errors import ConfigError

QKV = ("q", "k", "v")


class SlicedLoRA(nn.Module):
    """A frozen fused projection ``[..., in] -> [..., 3 * out]`` with LoRA on ``slices``.

    Args:
        base: the projection (GPT-2 ``Conv1D``: weight ``[in, 3 * out]``); it stays frozen.
        slices: which of ``q``, ``k``, ``v`` get a LoRA update.
        r, lora_alpha, dropout: the LoRA settings.
    """

    def __init__(
        self, base: nn.Module, slices: list[str], r: int, lora_alpha: float, dropout: float
    ) -> None:
        super().__init__()
        in_features, fused = base.weight.shape
        self.base = base.requires_grad_(False)
        self.width = fused // 3
        self.slices = list(slices)
        self.scaling = lora_alpha / r
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.ParameterDict(
            {s: nn.Parameter(torch.empty(r, in_features)) for s in self.slices}
        )
        self.lora_B = nn.ParameterDict(
            {s: nn.Parameter(torch.zeros(self.width, r)) for s in self.slices}
        )
        for a in self.lora_A.values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., in] -> [..., 3 * out]``."""
        out = self.base(x)
        dropped = self.dropout(x)
        parts = list(out.split(self.width, dim=-1))
        for s in self.slices:
            i = QKV.index(s)
            parts[i] = parts[i] + self.scaling * (dropped @ self.lora_A[s].t() @ self.lora_B[s].t())
        return torch.cat(parts, dim=-1)


def inject_sliced_lora(
    model: nn.Module, target: str, slices: list[str], r: int, lora_alpha: float, dropout: float
) -> int:
    """Replaces every submodule named ``target`` (e.g. ``c_attn``) by a ``SlicedLoRA``.

    Returns:
        How many modules were replaced.

    Raises:
        ConfigError: a slice is not q, k or v, or no module has that name.
    """
    bad = [s for s in slices if s not in QKV] or ([] if slices else ["(none)"])
    if bad or len(set(slices)) != len(slices):
        raise ConfigError(
            f"method.lora_qkv_slices={list(slices)}: give distinct slices among q, k, v"
        )
    found = [
        (parent, child)
        for parent in model.modules()
        for child, module in parent.named_children()
        if child == target and not isinstance(parent, SlicedLoRA)
    ]
    if not found:
        raise ConfigError(
            f"method.lora_qkv_slices: no module named {target!r} (the fused qkv projection, "
            "GPT-2's c_attn) in the backbone"
        )
    for parent, child in found:
        setattr(parent, child, SlicedLoRA(getattr(parent, child), slices, r, lora_alpha, dropout))
    return len(found)
