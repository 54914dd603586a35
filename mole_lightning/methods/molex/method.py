"""``method=molex``: layer routing over a base PEFT method (LoRA by default), and the
callback that exports the routers' layer choices."""

from __future__ import annotations

from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback
from torch import nn

from mole_lightning.methods.encoder import TunedEncoder
from mole_lightning.methods.method import Method
from mole_lightning.methods.molex.callbacks import LayerSelectionExport
from mole_lightning.methods.molex.config import MolexConfig
from mole_lightning.methods.molex.routing import MolexRouting


def build_molex(backbone: nn.Module, config: MolexConfig, backbone_cfg: DictConfig) -> TunedEncoder:
    """Applies ``config.base`` (its registry entry's build: a ``MolexConfig`` is a
    ``LoraConfig`` and an ``AdapterConfig``, so the base reads its options from it) and
    then routes every layer among the (shared, upcycled) layers."""
    from mole_lightning.methods import METHODS  # the registry holds this module's entry

    encoder = METHODS[config.base].build(backbone, config, backbone_cfg)
    routing = MolexRouting.attach(encoder.backbone, config)
    return TunedEncoder(encoder.backbone, "molex", {**encoder.parts, "molex": routing})


def molex_callbacks(config: MolexConfig, cfg: DictConfig) -> list[Callback]:
    """The layer-selection export of every validation."""
    return [LayerSelectionExport()]


METHOD = Method(MolexConfig, build_molex, molex_callbacks)
