"""``method=adapter``: parallel bottleneck adapters in every layer, backbone frozen."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from mole_lightning.methods.adapter.config import AdapterConfig
from mole_lightning.methods.adapter.module import BottleneckAdapter
from mole_lightning.methods.encoder import TunedEncoder, freeze
from mole_lightning.methods.injection import attach_parallel
from mole_lightning.methods.method import Method


def build_adapter(
    backbone: nn.Module, config: AdapterConfig, backbone_cfg: DictConfig
) -> TunedEncoder:
    """Attaches a ``BottleneckAdapter`` in parallel to every layer's feed-forward block."""
    freeze(backbone)
    adapters, _ = attach_parallel(backbone, lambda _i, hidden: BottleneckAdapter(hidden, config))
    return TunedEncoder(backbone, "adapter", {"adapters": adapters})


METHOD = Method(AdapterConfig, build_adapter)
