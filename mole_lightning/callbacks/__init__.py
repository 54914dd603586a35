"""Lightning callbacks; ``method_callbacks`` picks those a method needs."""

from __future__ import annotations

from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback


def method_callbacks(cfg: DictConfig) -> list[Callback]:
    """The callbacks the configured method needs (none for full, lora, adapter)."""
    return []
