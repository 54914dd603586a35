"""Full fine-tuning: every backbone weight trains (options: ``config``, build: ``method``)."""

from mole_lightning.methods.full.config import FullConfig

__all__ = ["FullConfig"]
