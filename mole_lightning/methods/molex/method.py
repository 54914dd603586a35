"""``method=molex``: layer routing over a base PEFT method (LoRA by default)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from torch import nn

from mole_lightning.errors import ConfigError
from mole_lightning.methods.encoder import TunedEncoder
from mole_lightning.methods.molex.config import MolexConfig

MOLEX_CONFIG_KEYS = (
    "alpha",
    "top_k",
    "pooling",
    "router",
    "router_proj_dim",
    "router_init_std",
    "cosine_init_temperature",
    "balance_loss",
    "routing",
    "learned_alpha",
    "routed_layers",
    "candidate_layers",
    "dispatch",
    "capacity_factor",
    "balance_loss_type",
    "cosine_norm_axis",
    "shared_router",
    "router_lr",
    "router_weight_decay",
    "router_decay_biases",
    "cosine_embedding_init_std",
    "rerun_own_layer_when_chosen",
    "decode_with_mixed_kv_cache",
)


def molex_config(method_cfg: DictConfig) -> MolexConfig:
    """The ``MolexConfig`` of a ``method=molex`` node."""
    kwargs = {k: method_cfg[k] for k in MOLEX_CONFIG_KEYS if k in method_cfg}
    for key in ("routed_layers", "candidate_layers"):
        if kwargs.get(key) is not None:
            kwargs[key] = list(kwargs[key])
    return MolexConfig(**kwargs)


def build_molex(
    backbone: nn.Module, method_cfg: DictConfig, backbone_cfg: DictConfig
) -> TunedEncoder:
    """Applies ``method_cfg.base`` (lora, adapter or full; its settings under ``method_cfg``)
    and then routes every layer among the (shared, upcycled) layers."""
    from mole_lightning.methods import METHODS
    from mole_lightning.methods.molex import MolexRouting

    base = method_cfg.get("base", "lora")
    if base not in ("lora", "adapter", "full"):
        raise ConfigError(f"method.base={base!r} for molex; valid: lora, adapter, full")
    base_cfg = OmegaConf.merge(method_cfg, {"name": base})
    encoder = METHODS[base](backbone, base_cfg, backbone_cfg)
    routing = MolexRouting.attach(encoder.backbone, molex_config(method_cfg))
    return TunedEncoder(encoder.backbone, "molex", {**encoder.parts, "molex": routing})
