"""``method=mole``: MoLE adapters on a frozen backbone, and the callbacks of its training
phases (temperature annealing, prune-then-retrain, importance export)."""

from __future__ import annotations

from dataclasses import asdict

from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback
from torch import nn

from mole_lightning.methods.encoder import TunedEncoder, freeze
from mole_lightning.methods.method import Method
from mole_lightning.methods.mole.callbacks import (
    ExpertImportanceExport,
    PruneExperts,
    RetrainPhase,
    TemperatureAnnealing,
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
    """Temperature annealing, prune-then-retrain (``prune.enabled``) and the importance
    export."""
    temp, prune = config.temperature, config.prune
    steps = temp.steps or (prune.after_steps if prune.enabled else None)
    callbacks: list[Callback] = [TemperatureAnnealing(temp.start, temp.end, steps, temp.schedule)]
    if prune.enabled:
        phase = prune.retrain_phase
        callbacks.append(
            PruneExperts(
                prune.after_steps,
                prune.top_k,
                prune.retrain,
                prune.reset_lr_schedule,
                rule=prune.rule,
                graph_layers=prune.graph_layers,
                phase=RetrainPhase(**asdict(phase)) if phase.epochs is not None else None,
            )
        )
    callbacks.append(ExpertImportanceExport())
    return callbacks


METHOD = Method(MoleConfig, build_mole, mole_callbacks)
