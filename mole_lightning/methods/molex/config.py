"""Options of ``method=molex``, the mixture of layer experts."""

from __future__ import annotations

from dataclasses import dataclass

from mole_lightning.errors import ConfigError
from mole_lightning.methods.adapter.config import AdapterConfig
from mole_lightning.methods.lora.config import LoraConfig

BASES = ("lora", "adapter", "full")
"""The PEFT methods MoLEx can route over (``base``)."""

_CHOICES = {
    "base": BASES,
    "pooling": ("mean", "first", "max"),
    "router": ("linear", "cosine"),
    "routing": ("sequence", "batch_vote"),
    "dispatch": ("grouped", "capacity"),
    "balance_loss_type": ("switch", "batch_winner"),
    "cosine_norm_axis": ("feature", "sequence"),
}

_VALUE_FOR_ANY_ROUTING = {
    "balance_loss_type": "switch",
    "cosine_norm_axis": "feature",
    "decode_with_mixed_kv_cache": False,
}
"""Values of the options that work with every routing (the others need batch_vote)."""


@dataclass
class MolexConfig(AdapterConfig, LoraConfig):
    """Options of MoLEx: at every routed layer a router picks other layers of the
    backbone (sparse upcycling), over LoRA-tuned layers by default. The options of its
    base method are those of ``LoraConfig`` and ``AdapterConfig`` (inherited: ``r``,
    ``lora_alpha``, ``dropout``, ``target_modules``, ``lora_qkv_slices``, ``bottleneck``,
    ``scaling``, ``layer_norm``, ``zero_down_bias``); those below are the routing's.

    At routed layer ``t`` with input ``z_t`` a router picks ``top_k`` layers ``j`` among
    the candidate layers (``t`` itself included when it is a candidate), and the layer's
    output becomes ``w * u_t(z_t) + (1 - w) * sum_j p~_j u_j(z_t)``: the chosen layers
    read the same input and share their (LoRA / adapter) weights, no new expert weights.

    Attributes:
        base: the PEFT method inside the upcycled layers: ``lora``, ``adapter`` or
            ``full``.
        alpha: mix weight ``w`` of the layer's own output (ours 0.9; the authors: 0.5 or
            0.95); ``1.0`` gives exactly the plain model. With ``learned_alpha`` it is the
            initial value of the learned weight and must lie strictly inside (0, 1). 0.9
            keeps each layer near the pre-trained function at the start (measured on CoLA /
            MiniLM: 0.9 learns earlier and ends higher than 0.5, and a learned alpha
            started at 0.9 stays at 0.90; docs/notes/2026-11-evidence-notebook.md, "MoLEx:
            the mix weight").
        top_k: layers picked per sequence; the renormalised router probabilities of the
            picked layers ``p~_j`` share ``1 - w``. ``"batch_vote"`` needs ``top_k == 1``.
        pooling: how a sequence becomes the router's input ``[batch, hidden]``: ``"mean"``
            over non-padding tokens, the ``"first"`` non-padding token (CLS), or the
            ``"max"`` over non-padding tokens. Unused by ``"batch_vote"`` (every token
            votes).
        router: ``"linear"`` (one linear gate on the pooled input) or ``"cosine"`` (the
            tutel / X-MoE cosine router: linear projection to ``router_proj_dim``,
            cosine similarity with one learned embedding per candidate, times a learned
            inverse temperature).
        cosine_norm_axis: the axis the cosine router L2-normalises its projection
            ``[batch, seq, proj]`` along: ``"feature"`` (a true cosine similarity) or
            ``"sequence"`` (the authors' code, which normalises dim 1 of that tensor: each
            feature over the batch's tokens, padding included). ``"sequence"`` needs
            ``routing="batch_vote"`` (the only routing that scores tokens).
        router_proj_dim: projection width of the cosine router (the authors: 96-416).
        router_init_std: std of the normal init of every router weight (biases start
            at zero). 0.02 is the initializer range of BERT / RoBERTa / GPT-2, so the
            initial logits are small and the first choices near uniform.
        cosine_init_temperature: initial temperature of the cosine router (tutel's
            ``init_t``); its inverse is learned and clamped at 100.
        balance_loss: coefficient of the load-balancing loss summed over routed layers
            (``0.0``: off); its form is ``balance_loss_type``.
        balance_loss_type: ``"switch"`` (ours): the Switch-Transformer loss
            ``n * sum_j f_j P_j``, ``f_j`` the fraction of routing decisions (sequences;
            tokens in ``"batch_vote"``) that picked candidate ``j``, ``P_j`` the mean
            router probability of ``j``. ``"batch_winner"`` (the authors): ``n * P_j`` at
            the batch's winning candidate ``j`` only (their per-call count vector is
            one-hot at the winner), ``P_j`` over all tokens, padding included. Needs
            ``routing="batch_vote"``.
        routing: ``"sequence"`` (ours): each sequence picks its own ``top_k`` layers from
            its pooled input and the router probability carries gradient
            (straight-through, see ``MolexRouting``). ``"batch_vote"`` (the authors):
            every token, padding included, votes for its top-1 layer and the most frequent
            choice serves the whole batch; the router probability never enters the mix,
            so the router learns only through ``balance_loss`` (and its weights are
            frozen when that is 0).
        learned_alpha: learn ``w`` per routed layer as a 2-way softmax (the authors'
            "learned" mix weight), initialised at ``alpha``.
        shared_router: one router and (with ``learned_alpha``) one learned mix pair serve
            every routed layer (the authors on CoLA, MNLI, MRPC, QNLI, QQP, SST-2 and
            E2E); ``False``: one of each per routed layer.
        router_lr: learning rate of the routers' and mix weights' own optimizer group
            (``None``: the run's ``optim.lr``). It follows the run's warmup and decay.
        router_weight_decay: weight decay of that group (``None``: ``optim.weight_decay``);
            router biases get none, like every bias, unless ``router_decay_biases``.
        router_decay_biases: the router biases decay at ``router_weight_decay`` too (the
            authors' router group decays every parameter in it); ``False`` (ours): biases
            never decay.
        cosine_embedding_init_std: std of the normal init of the cosine router's
            candidate embeddings (``None``: ``router_init_std``; the authors, from
            tutel's ``CosineTopKGate``: 0.01).
        rerun_own_layer_when_chosen: when layer ``t`` picks itself in training, run it a
            second time (a fresh dropout mask) for the chosen share, as the authors'
            code does; ``False`` reuses ``u_t(z_t)`` (identical without dropout).
        decode_with_mixed_kv_cache: allow calls on top of a KV cache (generation with
            ``use_cache=True``), the authors' decoding: each step's router votes over the
            step's new tokens, and a routed block's newly cached keys / values are the
            same mix of its own and the chosen block's (run over block ``t``'s past) as
            its hidden states. ``False`` (ours): a call on top of a cache is refused and
            generation recomputes the whole sequence (``use_cache=False``), so every
            step routes on the whole sequence and attends to unmixed keys / values.
            Needs ``routing="batch_vote"``.
        routed_layers: indices of the layers that route (``None``: all). The authors
            route only the first 12 of GPT-2 medium's 24 blocks on E2E.
        candidate_layers: indices of the layers a router may pick (``None``: all).
        dispatch: how the chosen layers run. ``"grouped"``: each distinct choice in the
            batch runs once on exactly the examples that made it (exact; the set of
            choices is data, so ``torch.compile`` breaks the graph there).
            ``"capacity"``: every candidate layer runs on a fixed number of rows,
            ``ceil(capacity_factor * batch * top_k / candidates)`` (at most the batch),
            gathered with ``topk`` (static shapes, no host sync: for
            ``trainer.compile``); an example beyond a layer's capacity keeps that
            share on its own layer's output, and the count of such dropped routes is
            kept per routed layer. Needs ``routing="sequence"``.
        capacity_factor: slack of ``"capacity"`` over a perfectly balanced choice;
            ``candidates / top_k`` never drops.
    """

    name: str = "molex"
    lr: float = 5.0e-4
    base: str = "lora"
    alpha: float = 0.9
    top_k: int = 1
    pooling: str = "mean"
    router: str = "linear"
    router_proj_dim: int = 128
    router_init_std: float = 0.02
    cosine_init_temperature: float = 0.5
    balance_loss: float = 0.0
    routing: str = "sequence"
    learned_alpha: bool = False
    routed_layers: list[int] | None = None
    candidate_layers: list[int] | None = None
    dispatch: str = "grouped"
    capacity_factor: float = 1.25
    balance_loss_type: str = "switch"
    cosine_norm_axis: str = "feature"
    shared_router: bool = False
    router_lr: float | None = None
    router_weight_decay: float | None = None
    router_decay_biases: bool = False
    cosine_embedding_init_std: float | None = None
    rerun_own_layer_when_chosen: bool = False
    decode_with_mixed_kv_cache: bool = False

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"molex.{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}"
                )
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"molex.alpha={self.alpha} must lie in [0, 1]")
        if self.learned_alpha and not 0.0 < self.alpha < 1.0:
            raise ConfigError(
                f"molex.alpha={self.alpha} is the initial learned mix weight and must lie "
                "strictly inside (0, 1) when molex.learned_alpha is true"
            )
        if self.top_k < 1:
            raise ConfigError(f"molex.top_k={self.top_k} must be at least 1")
        if self.routing == "batch_vote" and self.top_k != 1:
            raise ConfigError("molex.routing='batch_vote' picks one layer per batch: set top_k=1")
        if self.dispatch == "capacity" and self.routing != "sequence":
            raise ConfigError(
                "molex.dispatch='capacity' needs routing='sequence': batch_vote sends the "
                "whole batch to one layer, which a fixed capacity would cut; use "
                "dispatch='grouped'"
            )
        for name, value in _VALUE_FOR_ANY_ROUTING.items():
            if getattr(self, name) != value and self.routing != "batch_vote":
                raise ConfigError(
                    f"molex.{name}={getattr(self, name)!r} is the authors' batch-vote form: "
                    "it needs routing='batch_vote'"
                )
        for name in ("router_lr", "router_weight_decay"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"molex.{name}={getattr(self, name)} must be >= 0 (or null)")
        if self.rerun_own_layer_when_chosen and self.dispatch != "grouped":
            raise ConfigError(
                "molex.rerun_own_layer_when_chosen needs dispatch='grouped' (capacity "
                "dispatch keeps a self-choice on the layer's own output)"
            )
        if self.capacity_factor <= 0:
            raise ConfigError(f"molex.capacity_factor={self.capacity_factor} must be positive")
        if self.balance_loss < 0:
            raise ConfigError(f"molex.balance_loss={self.balance_loss} must be >= 0")
        if (
            self.router_proj_dim < 1
            or self.router_init_std <= 0
            or self.cosine_init_temperature <= 0
            or (self.cosine_embedding_init_std is not None and self.cosine_embedding_init_std <= 0)
        ):
            raise ConfigError(
                "molex.router_proj_dim, router_init_std, cosine_embedding_init_std and "
                "cosine_init_temperature must be positive"
            )

    def causal_lm_refusal(self) -> str | None:
        if self.base == "adapter":
            return f"method.base=adapter: {super().causal_lm_refusal()}"
        return None

    def resolve_layers(self, num_layers: int) -> tuple[list[int], list[int]]:
        """Returns ``(routed_layers, candidate_layers)`` for a backbone of ``num_layers``.

        Raises:
            ConfigError: an index is out of range or repeated, or ``top_k`` exceeds the
                number of candidates.
        """
        resolved = []
        for name in ("routed_layers", "candidate_layers"):
            given = getattr(self, name)
            layers = list(range(num_layers)) if given is None else [int(i) for i in given]
            bad = [i for i in layers if not 0 <= i < num_layers]
            if bad or len(set(layers)) != len(layers) or not layers:
                raise ConfigError(
                    f"molex.{name}={given} must be distinct layer indices in [0, {num_layers}) "
                    "(the backbone's layers), at least one"
                )
            resolved.append(sorted(layers))
        routed, candidates = resolved
        if self.top_k > len(candidates):
            raise ConfigError(
                f"molex.top_k={self.top_k} exceeds the {len(candidates)} candidate layers"
            )
        return routed, candidates
