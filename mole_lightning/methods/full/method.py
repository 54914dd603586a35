"""``method=full``: every backbone weight trains."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from mole_lightning.methods.encoder import TunedEncoder
from mole_lightning.methods.full.config import FullConfig
from mole_lightning.methods.method import Method


def build_full(backbone: nn.Module, config: FullConfig, backbone_cfg: DictConfig) -> TunedEncoder:
    """Unfreezes every backbone weight."""
    for p in backbone.parameters():
        p.requires_grad_(True)
    return TunedEncoder(backbone, "full")


METHOD = Method(FullConfig, build_full)
