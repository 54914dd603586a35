"""``method=mole``: MoLE adapters on a frozen backbone, and the callbacks of its training
phases (temperature annealing, prune-then-retrain, importance export)."""

from __future__ import annotations

from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback
from torch import nn

from mole_lightning.methods.encoder import TunedEncoder, freeze
from mole_lightning.methods.method import Method
from mole_lightning.methods.mole.callbacks import (
    ExpertImportanceExport,
    TemperatureAnnealing,
    prune_plan,
)
from mole_lightning.methods.mole.config import MoleConfig
from mole_lightning.methods.mole.model import MoleAdapters


def build_mole(backbone: nn.Module, config: MoleConfig, backbone_cfg: DictConfig) -> TunedEncoder:
    """Freezes the backbone and attaches a MoLE layer in parallel to every encoder layer
    (every expert, or the layers' experts of ``config.structure``)."""
    freeze(backbone)
    mole = MoleAdapters.attach(backbone, config, config.structure)
    return TunedEncoder(backbone, "mole", {"mole": mole})


def mole_callbacks(config: MoleConfig, cfg: DictConfig) -> list[Callback]:
    """Temperature annealing, the prune-then-retrain plan (``PruneExperts``, with
    ``prune.enabled``; ``callbacks.mole_phases`` runs its two fits) and the importance
    export."""
    temp, prune = config.temperature, config.prune
    steps = temp.steps or (prune.after_steps if prune.enabled else None)
    plan = prune_plan(config)
    return [
        TemperatureAnnealing(temp.start, temp.end, steps, temp.schedule),
        *([plan] if plan is not None else []),
        ExpertImportanceExport(),
    ]


METHOD = Method(MoleConfig, build_mole, mole_callbacks)
