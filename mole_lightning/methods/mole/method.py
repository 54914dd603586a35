"""``method=mole``: MoLE adapters on a frozen backbone."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from mole_lightning.methods.encoder import TunedEncoder
from mole_lightning.methods.mole import MoleAdapters, MoleConfig

MOLE_CONFIG_KEYS = (
    "experts",
    "bottleneck",
    "rgcn_layers",
    "num_relations",
    "dropout",
    "word_pooling",
    "mlp_scaling",
    "mlp_layer_norm",
    "hard",
    "gate_sampling",
    "gate_lr",
    "gate_weight_decay",
    "eval_mode",
    "rgcn_impl",
    "graph_expert",
    "wordless_tokens",
    "message_weights",
    "later_convs_single_relation",
    "zero_init_up",
    "rgcn_init",
    "mlp_zero_down_bias",
)


def mole_config(method_cfg: DictConfig) -> MoleConfig:
    """The ``MoleConfig`` of a ``method=mole`` node (the gate starts at ``temperature.start``)."""
    kwargs = {k: method_cfg[k] for k in MOLE_CONFIG_KEYS if k in method_cfg}
    kwargs["experts"] = list(kwargs.get("experts", MoleConfig().experts))
    return MoleConfig(**kwargs, init_temperature=method_cfg.temperature.start)


def build_mole(
    backbone: nn.Module, method_cfg: DictConfig, backbone_cfg: DictConfig
) -> TunedEncoder:
    """Freezes the backbone and attaches a MoLE layer in parallel to every encoder layer."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    structure = method_cfg.get("structure")
    mole = MoleAdapters.attach(
        backbone, mole_config(method_cfg), [list(s) for s in structure] if structure else None
    )
    return TunedEncoder(backbone, "mole", {"mole": mole})
