"""Settings of MoLE, the mixture of linguistic expert adapters."""

from __future__ import annotations

from dataclasses import dataclass, field

from mole_lightning.errors import ConfigError
from mole_lightning.methods.adapter import AdapterConfig

GRAPH_EXPERTS = ("syntactic", "semantic", "sequential")
"""Experts that run an RGCN over the word graph of the same name."""
EXPERTS = (*GRAPH_EXPERTS, "mlp")
"""Every expert kind, in the canonical column order of importance tables."""

_CHOICES = {
    "word_pooling": ("mean", "first"),
    "eval_mode": ("softmax", "argmax"),
    "rgcn_impl": ("dense", "pyg"),
}


@dataclass
class MoleConfig:
    """Settings of the MoLE adapters of every layer.

    Attributes:
        experts: expert kinds in every layer (subset of ``EXPERTS``, no repeats); their
            order is the column order of ``importance()`` tables.
        bottleneck: width of every expert's down-projection.
        rgcn_layers: RGCN layers inside a graph expert (ReLU between them).
        num_relations: relation types of every graph (the authors: parent→child and
            child→parent); must match ``WordGraphBatch.num_relations``.
        dropout: dropout on every expert's output.
        word_pooling: how a word's node state is made from its subwords: ``"mean"`` (the
            authors) or ``"first"`` subword.
        mlp_scaling: factor on the MLP expert's output (the authors: 4.0).
        mlp_layer_norm: LayerNorm before the MLP expert's down-projection (the authors).
        hard: straight-through hard Gumbel-Softmax in training (one-hot forward, soft
            gradient) instead of the soft mixture.
        eval_mode: evaluation mixture: ``"softmax"`` of the gate logits, or ``"argmax"``
            (the authors; only the chosen expert runs).
        init_temperature: Gumbel-Softmax temperature at the start (a callback anneals it).
        rgcn_impl: ``"dense"`` (padded adjacency, one batched matmul; faster, see
            ``benchmarks/rgcn.md``) or ``"pyg"`` (sparse scatter-mean message passing).
    """

    experts: list[str] = field(default_factory=lambda: list(EXPERTS))
    bottleneck: int = 64
    rgcn_layers: int = 2
    num_relations: int = 2
    dropout: float = 0.1
    word_pooling: str = "mean"
    mlp_scaling: float = 4.0
    mlp_layer_norm: bool = True
    hard: bool = False
    eval_mode: str = "softmax"
    init_temperature: float = 1.0
    rgcn_impl: str = "dense"

    def __post_init__(self) -> None:
        self.experts = list(self.experts)
        unknown = [e for e in self.experts if e not in EXPERTS]
        if unknown or not self.experts or len(set(self.experts)) != len(self.experts):
            raise ConfigError(
                f"mole.experts={self.experts} is invalid: give one or more distinct names "
                f"from {list(EXPERTS)}"
            )
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"mole.{name}={getattr(self, name)!r}; valid: {list(choices)}")
        for name in ("bottleneck", "rgcn_layers", "num_relations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"mole.{name}={getattr(self, name)} must be at least 1")
        if self.init_temperature <= 0:
            raise ConfigError(f"mole.init_temperature={self.init_temperature} must be positive")

    def mlp_adapter(self) -> AdapterConfig:
        """The bottleneck-adapter settings of the MLP expert."""
        return AdapterConfig(
            bottleneck=self.bottleneck,
            dropout=self.dropout,
            scaling=self.mlp_scaling,
            layer_norm=self.mlp_layer_norm,
        )
