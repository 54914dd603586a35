"""``method=lora``: low-rank updates on the target projections, backbone frozen."""

from __future__ import annotations

import peft
from omegaconf import DictConfig
from torch import nn

from mole_lightning.errors import ConfigError
from mole_lightning.methods.encoder import TunedEncoder, freeze
from mole_lightning.methods.lora.config import LoraConfig
from mole_lightning.methods.lora.sliced import inject_sliced_lora
from mole_lightning.methods.method import Method


def target_modules(config: LoraConfig, backbone_cfg: DictConfig) -> list[str]:
    """The projections LoRA adapts (``config.target_modules``, else the backbone's)."""
    return list(config.target_modules or backbone_cfg.lora_target_modules)


def peft_config(config: LoraConfig, backbone_cfg: DictConfig) -> peft.LoraConfig:
    """The peft ``LoraConfig`` of these options."""
    return peft.LoraConfig(
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.dropout,
        target_modules=target_modules(config, backbone_cfg),
        bias="none",
        fan_in_fan_out=backbone_cfg.get("lora_fan_in_fan_out", False),
    )


def build_lora(backbone: nn.Module, config: LoraConfig, backbone_cfg: DictConfig) -> TunedEncoder:
    """LoRA through peft, or, with ``lora_qkv_slices``, on those slices of one fused qkv
    projection."""
    freeze(backbone)
    if not config.lora_qkv_slices:
        backbone = peft.inject_adapter_in_model(peft_config(config, backbone_cfg), backbone)
        return TunedEncoder(backbone, "lora")
    targets = target_modules(config, backbone_cfg)
    if len(targets) != 1:
        raise ConfigError(
            f"method.lora_qkv_slices needs one fused qkv projection in target_modules, got {targets}"
        )
    inject_sliced_lora(
        backbone, targets[0], config.lora_qkv_slices, config.r, config.lora_alpha, config.dropout
    )
    return TunedEncoder(backbone, "lora")


METHOD = Method(LoraConfig, build_lora)
