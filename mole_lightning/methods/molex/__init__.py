"""MoLEx: a mixture of layer experts that upcycles a backbone's own layers."""

from mole_lightning.methods.molex.config import MolexConfig
from mole_lightning.methods.molex.routing import MolexRouting, find_layer_stack

__all__ = ["MolexConfig", "MolexRouting", "find_layer_stack"]
