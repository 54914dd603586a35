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
    "graph_expert": ("projected", "direct"),
    "wordless_tokens": ("zero", "identity"),
    "message_weights": ("relation", "label"),
    "gate_sampling": ("per_example", "per_batch", "none"),
    "rgcn_init": ("glorot", "dgl"),
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
        gate_sampling: the training mixture: ``"per_example"`` (the paper: every example
            draws its own Gumbel-Softmax sample), ``"per_batch"`` (one draw shared by the
            batch) or ``"none"`` (no noise: ``softmax(logits / temperature)``).
        gate_lr: the gate logits' learning rate, in their own AdamW group (``None``: the
            run's ``optim.lr``).
        gate_weight_decay: the gate logits' weight decay (``None``: the run's
            ``optim.weight_decay``; 0 keeps the logits from being pulled to uniform).
        rgcn_impl: ``"dense"`` (padded adjacency, one batched matmul; faster, see
            ``benchmarks/rgcn.md``) or ``"pyg"`` (sparse scatter message passing).
        graph_expert: ``"projected"`` (ours: down-project to ``bottleneck``, RGCN layers
            at that width, up-project) or ``"direct"`` (the authors' latest code: ReLU,
            then RGCN layers straight from the hidden size to ``bottleneck`` and back,
            each followed by ReLU and dropout, no projections).
        wordless_tokens: what a graph expert outputs for tokens without a word (special
            and padding tokens): ``"zero"`` (ours) or ``"identity"`` (the authors: the
            token's input unchanged).
        message_weights: ``"relation"`` (ours: each relation's incoming messages
            averaged) or ``"label"`` (the authors: each message weighted by
            1 / edges into its target with the same relation and label).
        later_convs_single_relation: RGCN layers after the first read every edge as
            relation 0 (the authors' code), with the same message weights.
        zero_init_up: a graph expert's up-projection starts at zero, so a fresh expert
            is a no-op (ours; the MLP expert's always does, as the authors'). Only for
            ``graph_expert="projected"``: the direct expert ends in a ReLU, and a zero
            last layer would never get a gradient.
        rgcn_init: ``"glorot"`` (ours: relation and self weights Glorot-uniform, times
            the ReLU gain in the direct expert) or ``"dgl"`` (the authors' DGL
            ``RelGraphConv``: relation weights ``U(+-1/sqrt(in))``, self weight Glorot
            with the ReLU gain, zero bias); see ``RelationalGraphConv``.
        mlp_zero_down_bias: the MLP expert's down-projection bias starts at zero (the
            authors); ``False``: PyTorch's default ``nn.Linear`` bias init.
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
    gate_sampling: str = "per_example"
    gate_lr: float | None = None
    gate_weight_decay: float | None = None
    rgcn_impl: str = "dense"
    graph_expert: str = "projected"
    wordless_tokens: str = "zero"
    message_weights: str = "relation"
    later_convs_single_relation: bool = False
    zero_init_up: bool = True
    rgcn_init: str = "glorot"
    mlp_zero_down_bias: bool = False

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
        if self.graph_expert == "direct" and self.zero_init_up:
            raise ConfigError(
                "mole.zero_init_up=true with mole.graph_expert=direct: the direct expert ends "
                "in a ReLU, so a zero last layer would never train; set mole.zero_init_up=false"
            )
        for name in ("gate_lr", "gate_weight_decay"):
            value = getattr(self, name)
            if value is not None and (value < 0 or (name == "gate_lr" and value == 0)):
                raise ConfigError(f"mole.{name}={value} must be positive (null: the run's)")
        if self.init_temperature <= 0:
            raise ConfigError(f"mole.init_temperature={self.init_temperature} must be positive")

    def mlp_adapter(self) -> AdapterConfig:
        """The bottleneck-adapter settings of the MLP expert."""
        return AdapterConfig(
            bottleneck=self.bottleneck,
            dropout=self.dropout,
            scaling=self.mlp_scaling,
            layer_norm=self.mlp_layer_norm,
            zero_down_bias=self.mlp_zero_down_bias,
        )
