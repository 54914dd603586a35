"""MoLE: a mixture of linguistic expert adapters (Li, Murray, Carenini, 2023).

Public API: ``MoleConfig`` (the options of ``method=mole``, with ``TemperatureConfig``,
``PruneConfig`` and ``RetrainPhaseConfig``), ``MoleAdapters.attach(backbone, cfg,
structure)`` (the injected method), and the building blocks ``MoleLayer``,
``ExpertGate``, ``GraphExpert``, ``RelationalGraphConv``. The registry entry (build and
callbacks) is in ``method``, the training phases' callbacks in ``callbacks``.
"""

from mole_lightning.methods.mole.config import (
    EXPERTS,
    GRAPH_EXPERTS,
    MoleConfig,
    PruneConfig,
    RetrainPhaseConfig,
    TemperatureConfig,
)
from mole_lightning.methods.mole.context import GraphBatchError, MissingGraphsError, MoleContext
from mole_lightning.methods.mole.experts import GraphExpert, build_expert
from mole_lightning.methods.mole.gate import ExpertGate
from mole_lightning.methods.mole.model import MoleAdapters, MoleLayer
from mole_lightning.methods.mole.rgcn import (
    DenseRelationalGraph,
    RelationalGraphConv,
    SparseRelationalGraph,
)

__all__ = [
    "EXPERTS",
    "GRAPH_EXPERTS",
    "DenseRelationalGraph",
    "ExpertGate",
    "GraphBatchError",
    "GraphExpert",
    "MissingGraphsError",
    "MoleAdapters",
    "MoleConfig",
    "MoleContext",
    "MoleLayer",
    "PruneConfig",
    "RelationalGraphConv",
    "RetrainPhaseConfig",
    "SparseRelationalGraph",
    "TemperatureConfig",
    "build_expert",
]
