"""Lightning callbacks; ``method_callbacks`` picks those a method needs."""

from __future__ import annotations

from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback


def method_callbacks(cfg: DictConfig) -> list[Callback]:
    """The callbacks the configured method needs: MoLE's temperature annealing, its
    prune-then-retrain plan (``PruneExperts``) and gate logging; MoLEx's layer-selection
    export."""
    method = cfg.method
    if method.name == "mole":
        from mole_lightning.callbacks.mole import (
            ExpertImportanceExport,
            TemperatureAnnealing,
            prune_plan,
        )

        temp, prune = method.temperature, method.prune
        steps = temp.get("steps") or (prune.after_steps if prune.enabled else None)
        plan = prune_plan(method)
        return [
            TemperatureAnnealing(temp.start, temp.end, steps, temp.schedule),
            *([plan] if plan is not None else []),
            ExpertImportanceExport(),
        ]
    if method.name == "molex":
        from mole_lightning.callbacks.molex import LayerSelectionExport

        return [LayerSelectionExport()]
    return []
