"""PEFT methods: each turns a backbone into a ``TunedEncoder``.

A method is a config node (``conf/method/<name>.yaml``, ``name`` selects the builder)
plus a builder ``(backbone, method_cfg, backbone_cfg) -> TunedEncoder``.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from mole_lightning.errors import ConfigError
from mole_lightning.methods.adapter import AdapterConfig, BottleneckAdapter
from mole_lightning.methods.encoder import TunedEncoder
from mole_lightning.methods.injection import attach_parallel
from mole_lightning.methods.mole_builder import build_mole
from mole_lightning.methods.molex_builder import build_molex
from mole_lightning.methods.sliced_lora import inject_sliced_lora

Builder = Callable[[nn.Module, DictConfig, DictConfig], TunedEncoder]


def freeze(module: nn.Module) -> None:
    """Sets ``requires_grad=False`` on every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(False)


def lora_config(method_cfg: DictConfig, backbone_cfg: DictConfig) -> LoraConfig:
    """The peft ``LoraConfig`` of a method node (targets default to the backbone's)."""
    targets = method_cfg.get("target_modules") or backbone_cfg.lora_target_modules
    return LoraConfig(
        r=method_cfg.r,
        lora_alpha=method_cfg.lora_alpha,
        lora_dropout=method_cfg.dropout,
        target_modules=list(targets),
        bias="none",
        fan_in_fan_out=backbone_cfg.get("lora_fan_in_fan_out", False),
    )


def build_full(
    backbone: nn.Module, method_cfg: DictConfig, backbone_cfg: DictConfig
) -> TunedEncoder:
    """Full fine-tuning: every backbone weight trains."""
    for p in backbone.parameters():
        p.requires_grad_(True)
    return TunedEncoder(backbone, "full")


def build_lora(
    backbone: nn.Module, method_cfg: DictConfig, backbone_cfg: DictConfig
) -> TunedEncoder:
    """LoRA: low-rank updates on the target projections, backbone frozen. Through peft,
    or, with ``method.lora_qkv_slices``, on those slices of one fused qkv projection."""
    freeze(backbone)
    slices = method_cfg.get("lora_qkv_slices")
    if not slices:
        backbone = inject_adapter_in_model(lora_config(method_cfg, backbone_cfg), backbone)
        return TunedEncoder(backbone, "lora")
    targets = list(method_cfg.get("target_modules") or backbone_cfg.lora_target_modules)
    if len(targets) != 1:
        raise ConfigError(
            f"method.lora_qkv_slices needs one fused qkv projection in target_modules, got {targets}"
        )
    inject_sliced_lora(
        backbone, targets[0], list(slices), method_cfg.r, method_cfg.lora_alpha, method_cfg.dropout
    )
    return TunedEncoder(backbone, "lora")


def adapter_config(method_cfg: DictConfig) -> AdapterConfig:
    return AdapterConfig(
        bottleneck=method_cfg.bottleneck,
        dropout=method_cfg.dropout,
        scaling=method_cfg.get("scaling", 1.0),
        layer_norm=method_cfg.get("layer_norm", False),
    )


def build_adapter(
    backbone: nn.Module, method_cfg: DictConfig, backbone_cfg: DictConfig
) -> TunedEncoder:
    """Parallel bottleneck adapters in every layer, backbone frozen."""
    freeze(backbone)
    cfg = adapter_config(method_cfg)
    adapters, _ = attach_parallel(backbone, lambda _i, hidden: BottleneckAdapter(hidden, cfg))
    return TunedEncoder(backbone, "adapter", {"adapters": adapters})


METHODS: dict[str, Builder] = {
    "full": build_full,
    "lora": build_lora,
    "adapter": build_adapter,
    "mole": build_mole,
    "molex": build_molex,
}


def register_method(name: str, builder: Builder) -> None:
    """Adds a method builder under ``name`` (the value of ``method.name``)."""
    METHODS[name] = builder


def build_encoder(
    backbone: nn.Module, method_cfg: DictConfig, backbone_cfg: DictConfig
) -> TunedEncoder:
    """Applies the method named by ``method_cfg.name`` to ``backbone``.

    Raises:
        ConfigError: unknown method name (the message lists the valid ones).
    """
    name = method_cfg.name
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name](backbone, method_cfg, backbone_cfg)


def method_summary(method_cfg: DictConfig) -> dict:
    """The method node as a plain dict (for logs and checkpoints)."""
    return OmegaConf.to_container(method_cfg, resolve=True)
