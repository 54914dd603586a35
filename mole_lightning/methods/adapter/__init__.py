"""The parallel bottleneck adapter (``method=adapter``, and MoLE's MLP expert); options:
``config``, the module: ``module``, build: ``method``."""

from mole_lightning.methods.adapter.config import AdapterConfig
from mole_lightning.methods.adapter.module import BottleneckAdapter

__all__ = ["AdapterConfig", "BottleneckAdapter"]
