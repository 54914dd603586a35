"""Options of ``method=full``."""

from __future__ import annotations

from dataclasses import dataclass

from mole_lightning.methods.method import MethodConfig


@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning: every backbone weight trains (no options of its own)."""

    name: str = "full"
    lr: float = 2.0e-5
