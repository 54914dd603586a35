"""MoLE: a mixture of linguistic expert adapters (Li, Murray, Carenini, 2023).

Public API: ``MoleConfig`` (settings), ``MoleAdapters.attach(backbone, cfg, structure)``
(the injected method), and the building blocks ``MoleLayer``, ``ExpertGate``,
``GraphExpert``, ``RelationalGraphConv``.
"""

from mole_lightning.methods.mole.config import EXPERTS, GRAPH_EXPERTS, MoleConfig
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
    "RelationalGraphConv",
    "SparseRelationalGraph",
    "build_expert",
]
