"""Lightning callbacks; ``method_callbacks`` picks those a method needs."""

from __future__ import annotations

from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback


def method_callbacks(cfg: DictConfig) -> list[Callback]:
    """The callbacks the configured method needs: MoLE's temperature annealing,
    prune-then-retrain and importance export; MoLEx's layer-selection export."""
    method = cfg.method
    if method.name == "mole":
        from mole_lightning.callbacks.mole import (
            ExpertImportanceExport,
            PruneExperts,
            RetrainPhase,
            TemperatureAnnealing,
        )

        temp, prune = method.temperature, method.prune
        steps = temp.get("steps") or (prune.after_steps if prune.enabled else None)
        callbacks: list[Callback] = [
            TemperatureAnnealing(temp.start, temp.end, steps, temp.schedule)
        ]
        if prune.enabled:
            phase = prune.get("retrain_phase") or {}
            callbacks.append(
                PruneExperts(
                    prune.after_steps,
                    prune.top_k,
                    prune.retrain,
                    prune.reset_lr_schedule,
                    rule=prune.get("rule", "per_layer"),
                    graph_layers=prune.get("graph_layers", 2),
                    phase=RetrainPhase(**phase) if phase.get("epochs") is not None else None,
                )
            )
        callbacks.append(ExpertImportanceExport())
        return callbacks
    if method.name == "molex":
        from mole_lightning.callbacks.molex import LayerSelectionExport

        return [LayerSelectionExport()]
    return []
