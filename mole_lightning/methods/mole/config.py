"""Options of ``method=mole``, the mixture of linguistic expert adapters."""

from __future__ import annotations

from dataclasses import dataclass, field

from mole_lightning.errors import ConfigError
from mole_lightning.methods.adapter import AdapterConfig
from mole_lightning.methods.method import MethodConfig

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
class TemperatureConfig:
    """The gates' Gumbel-Softmax temperature schedule (``TemperatureAnnealing``).

    Attributes:
        start: the temperature at step 0 (the gates start at it).
        end: the temperature from ``steps`` on.
        schedule: ``constant``, ``linear`` or ``exponential``.
        steps: length of the schedule in optimizer steps (``None``: the exploration phase,
            ``prune.after_steps``, or the whole run without pruning).
    """

    start: float = 1.0
    end: float = 0.1
    schedule: str = "exponential"
    steps: int | None = None


@dataclass
class RetrainPhaseConfig:
    """The retrain phase's own length, batch size and schedule, counted from the prune.

    Attributes:
        epochs: with ``epochs`` set, the epoch of the prune ends there and ``epochs``
            full epochs follow at ``batch_size`` under a fresh linear schedule with
            ``warmup_ratio`` (``trainer.max_steps`` still caps the run); ``None``: the run
            goes on (``trainer.max_epochs`` / ``max_steps``) at ``data.batch_size``.
        batch_size: the phase's training batch size (``None``: ``data.batch_size``).
        warmup_ratio: the phase's warmup share (``None``: ``optim.warmup_ratio``).
    """

    epochs: int | None = None
    batch_size: int | None = None
    warmup_ratio: float | None = None


@dataclass
class PruneConfig:
    """Prune-then-retrain (``PruneExperts``).

    Attributes:
        enabled: prune after the exploration phase (else every expert trains throughout).
        after_steps: optimizer steps of the exploration phase (all experts, gated).
        rule: ``per_layer``: the ``top_k`` most important experts of every layer (the
            paper's text); ``graph_layers``: a graph expert only in ``graph_layers``
            layers, the MLP expert everywhere else, layers ranked as the authors' latest
            code ranks them: by their best graph expert's float32
            ``softmax(logits / 0.001)``, which saturates at 1.0 for a layer's winner, ties
            to the LATER layer (a stable ascending sort, the last ``graph_layers``
            layers); ``graph_layers_softmax``: the same from the unsaturated
            ``softmax(logits)``, ties to the earlier layer (ranks by the gates'
            confidence; this project's rule before).
        top_k: experts kept per layer (``per_layer``).
        graph_layers: layers that keep a graph expert (the ``graph_layers`` rules).
        retrain: ``continue`` (kept experts keep weights and optimizer state) or
            ``scratch`` (re-initialised).
        reset_lr_schedule: a fresh warmup/decay schedule over the steps after the prune
            (else the run's goes on).
        retrain_phase: the retrain phase's own length, batch size and schedule.
    """

    enabled: bool = True
    after_steps: int = 1000
    rule: str = "per_layer"
    top_k: int = 1
    graph_layers: int = 2
    retrain: str = "continue"
    reset_lr_schedule: bool = True
    retrain_phase: RetrainPhaseConfig = field(default_factory=RetrainPhaseConfig)


@dataclass
class MoleConfig(MethodConfig):
    """Options of MoLE: parallel linguistic expert adapters in every layer, mixed by a
    per-layer Gumbel-Softmax gate; after ``prune.after_steps`` the top experts per layer
    are kept and retrained. ``experiment=mole_paper`` sets the authors' value of each.

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
        eval_mode: evaluation mixture before pruning: ``"softmax"`` of the gate logits,
            or ``"argmax"`` (the authors; only the chosen expert runs).
        gate_sampling: the training mixture: ``"per_example"`` (the paper: every example
            draws its own Gumbel-Softmax sample), ``"per_batch"`` (one draw shared by the
            batch) or ``"none"`` (no noise: ``softmax(logits / temperature)``).
        gate_lr: the gate logits' learning rate, in their own AdamW group (``None``: the
            run's ``optim.lr``, in the run's group). With Adam a logit moves about
            ``gate_lr`` per step, so at the run's lr (3e-4) 200 exploration steps move it
            by at most ~0.06 and every importance stays near 1 / experts: the prune then
            keeps noise. 0.05 (the default since issue 31) lets the gates decide
            (docs/results.md, "MoLE: does the gate decide?").
        gate_weight_decay: the gate logits' weight decay (``None``: the run's
            ``optim.weight_decay``); 0 (the default) keeps the logits from being pulled
            back to uniform.
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
            1 / edges into its target with the same relation and label, so children
            labelled {A, A, B} give (A + A) / 2 + B).
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
        structure: a pruned structure (the kept experts of every layer) to train from the
            start (``None``: every expert in every layer).
        temperature: the gates' temperature schedule (the gates start at ``start``).
        prune: prune-then-retrain.
    """

    name: str = "mole"
    lr: float = 3.0e-4
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
    gate_sampling: str = "per_example"
    gate_lr: float | None = 0.05
    gate_weight_decay: float | None = 0.0
    rgcn_impl: str = "dense"
    graph_expert: str = "projected"
    wordless_tokens: str = "zero"
    message_weights: str = "relation"
    later_convs_single_relation: bool = False
    zero_init_up: bool = True
    rgcn_init: str = "glorot"
    mlp_zero_down_bias: bool = False
    structure: list[list[str]] | None = None
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)

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
        if self.temperature.start <= 0:
            raise ConfigError(f"mole.temperature.start={self.temperature.start} must be positive")

    def runs_in_phases(self) -> bool:
        """MoLE trains through its phases (one fit when ``prune.enabled`` is false)."""
        return True

    def reads_word_graphs(self) -> bool:
        """Whether a graph expert is in the experts (or the ``structure``)."""
        used = [e for layer in self.structure for e in layer] if self.structure else self.experts
        return any(e in GRAPH_EXPERTS for e in used)

    def causal_lm_refusal(self) -> str | None:
        return "MoLE needs word graphs the E2E data has none of"

    def mlp_adapter(self) -> AdapterConfig:
        """The bottleneck-adapter settings of the MLP expert."""
        return AdapterConfig(
            bottleneck=self.bottleneck,
            dropout=self.dropout,
            scaling=self.mlp_scaling,
            layer_norm=self.mlp_layer_norm,
            zero_down_bias=self.mlp_zero_down_bias,
        )
