"""Options of ``method=lora``."""

from __future__ import annotations

from dataclasses import dataclass

from mole_lightning.methods.method import MethodConfig


@dataclass
class LoraConfig(MethodConfig):
    """LoRA (peft) on the attention projections; the backbone stays frozen.

    Attributes:
        r: rank of every low-rank update.
        lora_alpha: the update's scaling is ``lora_alpha / r``.
        dropout: dropout on the update's input.
        target_modules: the projections adapted (``None``: the backbone's
            ``lora_target_modules``, its query and value projections).
        lora_qkv_slices: LoRA only on these slices (``q``, ``k``, ``v``) of ONE fused
            ``[q|k|v]`` projection named in ``target_modules`` (GPT-2's ``c_attn``):
            ``[q, v]`` as the MoLEx authors (microsoft/LoRA's ``MergedLinear``);
            ``None``: peft adapts the whole projection.
    """

    name: str = "lora"
    lr: float = 5.0e-4
    r: int = 8
    lora_alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] | None = None
    lora_qkv_slices: list[str] | None = None
