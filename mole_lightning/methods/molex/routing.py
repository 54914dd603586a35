"""MoLEx layer routing, injected into a backbone's layer stack with hooks.

``MolexRouting.attach(backbone, cfg)`` leaves the transformers model object and its
module names untouched (LoRA applied before or after keeps its parameter names, and
``forward`` / ``generate`` work as before). It registers

* a forward pre-hook on the base model (``RobertaModel``, ``GPT2Model``, ...) that keeps
  the call's 2-D ``attention_mask`` ``[batch, seq]`` (the padding the router pools over)
  and starts a new balance loss on every training forward, and
* a forward hook on every routed layer ``t`` that receives the layer's input ``z_t``
  and its own output ``u_t(z_t)``, routes, runs each chosen layer once on the examples
  that chose it (``dispatch="grouped"``) or on a fixed number of gathered rows
  (``dispatch="capacity"``, static shapes for ``torch.compile``), and returns
  ``w * u_t(z_t) + (1 - w) * sum_j p~_j u_j(z_t)``.

Gradient to the router (``routing="sequence"``): the picked layers' weights are
``p~_j * p_j / p_j.detach()`` (straight-through): the forward value is exactly the
renormalised probability ``p~_j`` (1 for ``top_k=1``), so outputs equal the paper's
formula, and the gradient reaches the router logits as ``p~_j * d log p_j`` times the
loss's sensitivity to the chosen layer's output. ``alpha=1`` (fixed) skips the chosen
layers, so the output is exactly the plain model's.

The routing module holds the routers, the learned mix weights and the selection
counts; register it on the LightningModule so it trains, moves and saves with it.
Caching: a chosen layer runs without the KV cache, and a call whose cache already holds
earlier tokens is refused (the router must see the whole sequence): generate with
``use_cache=False``. ``decode_with_mixed_kv_cache`` decodes the authors' way instead
(``cached_mix``): cached calls are routed on their new tokens and the cache is mixed.

Activation checkpointing (``backbone.activation_checkpointing``) may run a routed
layer's hook a second time in the backward pass (transformers before 5.23 checkpoint a
layer's ``__call__``, hooks included; later ones only its ``forward``). The recomputed
routing makes the same choice (it depends only on the layer input and the RNG state the
checkpoint restores), balance-loss terms are kept per routed layer (a recomputation
replaces its layer's term, it does not add one), and selection counts are only taken in
eval mode, where nothing is recomputed.
"""

from __future__ import annotations

import inspect
import math
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from mole_lightning.core.optimizer_groups import GroupSettings
from mole_lightning.errors import ConfigError
from mole_lightning.methods.molex.cached_mix import layer_past, mix_cached_layer, run_on_past_of
from mole_lightning.methods.molex.config import MolexConfig
from mole_lightning.methods.molex.layer_call import (
    LayerCall,
    cached_length,
    layer_hidden,
    replace_hidden,
)
from mole_lightning.methods.molex.router import (
    batch_winner_balance_loss,
    build_router,
    pool_sequences,
    switch_balance_loss,
)
from mole_lightning.utils.tensors import count_indices


def find_layer_stack(backbone: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """Returns ``(base_model, layers)`` of a transformers model, peft-wrapped or not.

    The base model is the module whose forward receives ``attention_mask`` and runs the
    layers: ``encoder.layer`` (BERT, RoBERTa, DeBERTa-v2, MiniLM) or ``h`` (GPT-2).

    Raises:
        ConfigError: no known layer stack.
    """
    model = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    base = getattr(model, "base_model", model)
    for path in ("encoder.layer", "h"):
        module: Any = base
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return base, module
    raise ConfigError(
        f"{type(backbone).__name__} has no layer stack MoLEx knows (encoder.layer or h); "
        "MoLEx supports BERT, RoBERTa, DeBERTa-v2, MiniLM and GPT-2 backbones"
    )


class MolexRouting(nn.Module):
    """Routers and statistics of MoLEx over one backbone's ``T`` layers.

    Attributes:
        cfg: the settings.
        routed_layers: indices of the routed layers (in this order).
        candidate_layers: indices the routers choose among (router output order).
        routers: one router per routed layer, or one for all with ``shared_router``;
            each ``[..., hidden] -> [..., len(candidates)]``.
        mix_logits: ``[len(routed) or 1 when shared, 2]`` learned (own, chosen) mix
            logits, or ``None``.
        selection_counts: ``[T, T]`` long buffer; row ``t`` (a routed layer), column
            ``j`` (the chosen layer) counts eval-mode choices, one per example and pick.
        dropped_routes: ``[T]`` long buffer (not saved); eval-mode choices of routed
            layer ``t`` that ``dispatch="capacity"`` could not serve (they kept ``u_t``).
    """

    def __init__(self, cfg: MolexConfig, num_layers: int, hidden_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.routed_layers, self.candidate_layers = cfg.resolve_layers(num_layers)
        n = len(self.candidate_layers)
        copies = 1 if cfg.shared_router else len(self.routed_layers)
        self.routers = nn.ModuleList(build_router(cfg, hidden_size, n) for _ in range(copies))
        if cfg.routing == "batch_vote" and cfg.balance_loss == 0:
            self.routers.requires_grad_(False)  # no loss reaches them (the authors' setup)
        self.mix_logits = (
            nn.Parameter(torch.tensor([[math.log(cfg.alpha), math.log1p(-cfg.alpha)]] * copies))
            if cfg.learned_alpha
            else None
        )
        self.register_buffer(
            "selection_counts", torch.zeros(num_layers, num_layers, dtype=torch.long)
        )
        self.register_buffer(
            "dropped_routes", torch.zeros(num_layers, dtype=torch.long), persistent=False
        )
        self.register_buffer("candidates", torch.tensor(self.candidate_layers), persistent=False)
        self._slot = {t: i for i, t in enumerate(self.routed_layers)}
        self._layers: tuple[nn.Module, ...] = ()
        self._handles: list[RemovableHandle] = []
        self._padding_mask: torch.Tensor | None = None
        self._balance_terms: dict[int, torch.Tensor] = {}
        self._forced: dict[int, int] = {}
        self._forced_next_call: dict[int, int] = {}
        self._forced_this_call: dict[int, int] = {}

    @classmethod
    def attach(cls, backbone: nn.Module, cfg: MolexConfig) -> MolexRouting:
        """Injects MoLEx routing into ``backbone`` in place and returns the routing module.

        Args:
            backbone: a transformers model (``AutoModel``, a task model, or a peft model
                wrapping one); LoRA may be applied before or after.
            cfg: the settings.
        """
        base, layers = find_layer_stack(backbone)
        if "attention_mask" not in inspect.signature(base.forward).parameters:
            raise ConfigError(
                f"{type(base).__name__}.forward takes no 'attention_mask': MoLEx pools the "
                "router input over the padding mask it finds under that name"
            )
        routing = cls(cfg, len(layers), base.config.hidden_size)
        routing.to(next(backbone.parameters()).device)
        routing._layers = tuple(layers)
        routing._handles.append(
            base.register_forward_pre_hook(routing._on_model_call, with_kwargs=True)
        )
        for t in routing.routed_layers:
            routing._handles.append(
                layers[t].register_forward_hook(
                    partial(routing._on_layer_output, t), with_kwargs=True, prepend=True
                )
            )
        return routing

    def detach(self) -> None:
        """Removes the hooks: the backbone computes as the plain model again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def aux_loss(self) -> torch.Tensor | None:
        """``balance_loss`` times the load-balancing loss of the last training forward,
        summed over routed layers; ``None`` when off or before any training forward."""
        if self.cfg.balance_loss == 0 or not self._balance_terms:
            return None
        return self.cfg.balance_loss * torch.stack(list(self._balance_terms.values())).sum()

    def router(self, t: int) -> nn.Module:
        """The router of routed layer ``t`` (the one shared router with ``shared_router``)."""
        return self.routers[0 if self.cfg.shared_router else self._slot[t]]

    def mix_weights(
        self, t: int, dtype: torch.dtype
    ) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """``(own, chosen)`` mix weights of routed layer ``t``: ``(alpha, 1 - alpha)``, or
        the softmax of its (or the shared) learned mix logits, as ``dtype`` scalars."""
        if self.mix_logits is None:
            return self.cfg.alpha, 1.0 - self.cfg.alpha
        row = 0 if self.cfg.shared_router else self._slot[t]
        own, chosen = torch.softmax(self.mix_logits[row], dim=0).to(dtype)
        return own, chosen

    def optimizer_group(self) -> GroupSettings | None:
        """The routers and mix logits with ``router_lr`` / ``router_weight_decay`` (their
        biases decayed too with ``router_decay_biases``), or ``None`` when all follow the
        run's."""
        cfg = self.cfg
        if (
            cfg.router_lr is None
            and cfg.router_weight_decay is None
            and not cfg.router_decay_biases
        ):
            return None
        return GroupSettings(
            tuple(self.parameters()),
            cfg.router_lr,
            cfg.router_weight_decay,
            decay_biases=cfg.router_decay_biases,
        )

    def reset_selection_counts(self) -> None:
        """Sets every selection count and dropped-route count to zero."""
        self.selection_counts.zero_()
        self.dropped_routes.zero_()

    def selection_frequencies(self) -> torch.Tensor:
        """``[T, T]`` float: each routed row of ``selection_counts`` divided by its sum
        (rows with no count stay zero)."""
        counts = self.selection_counts.float()
        return counts / counts.sum(dim=1, keepdim=True).clamp(min=1)

    def force_choice(self, layer_to_choice: dict[int, int] | None) -> None:
        """Makes routed layer ``t`` use layer ``layer_to_choice[t]`` for every example with
        weight 1 instead of asking its router (``None``: route normally again)."""
        self._forced = self._checked_choices(layer_to_choice)

    def force_choice_on_next_call(self, layer_to_choice: dict[int, int] | None) -> None:
        """``force_choice`` for the next call of the model only (then the routers, or the
        ``force_choice`` choices, decide again): the choices of a decoding's first step
        taken from another input (the authors' padded first step)."""
        self._forced_next_call = self._checked_choices(layer_to_choice)

    def _checked_choices(self, layer_to_choice: dict[int, int] | None) -> dict[int, int]:
        forced = dict(layer_to_choice or {})
        for t, j in forced.items():
            if t not in self._slot or not 0 <= j < self.selection_counts.shape[0]:
                raise ConfigError(
                    f"force_choice({{{t}: {j}}}): {t} must be a routed layer "
                    f"({self.routed_layers}) and {j} a layer index"
                )
        return forced

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave out the last forward's mask and loss terms (graph
        tensors cannot be deep-copied)."""
        state = self.__dict__.copy()
        state["_padding_mask"] = None
        state["_balance_terms"] = {}
        return state

    def _on_model_call(self, base: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._padding_mask = (
            inspect.signature(base.forward).bind(*args, **kwargs).arguments.get("attention_mask")
        )
        if base.training:
            self._balance_terms = {}
        self._forced_this_call = getattr(self, "_forced_next_call", {})
        self._forced_next_call = {}

    def _on_layer_output(
        self, t: int, layer: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any
    ) -> Any:
        call = LayerCall.bind(layer, args, kwargs)
        hidden = call.hidden_states
        cache = call.cache if self.cfg.decode_with_mixed_kv_cache else None
        if cache is None:
            self._refuse_partial_sequence(call, t)
        forced = getattr(self, "_forced_this_call", {}).get(t, self._forced.get(t))
        if forced is not None:
            choices = torch.full((hidden.shape[0], 1), forced, device=hidden.device)
            weights = torch.ones(hidden.shape[0], 1, device=hidden.device)
        elif self.cfg.routing == "sequence":
            choices, weights = self._route_sequences(t, hidden, layer.training)
        else:
            choices, weights = self._route_batch_vote(t, hidden, layer.training)
        if not layer.training:
            counts = self.selection_counts[t]
            counts.index_add_(0, choices.flatten(), torch.ones_like(choices.flatten()))
        if self.mix_logits is None and self.cfg.alpha == 1.0:
            return None
        own = layer_hidden(output)
        if cache is not None:
            return replace_hidden(output, self._mix_with_cache(t, call, cache, own, choices))
        if forced is None and self.cfg.dispatch == "capacity":
            chosen = self._run_capacity(t, call, own, choices, weights, layer.training)
        else:
            chosen = self._run_grouped(t, call, own, choices, weights, layer.training)
        own_weight, chosen_weight = self.mix_weights(t, own.dtype)
        return replace_hidden(output, own_weight * own + chosen_weight * chosen)

    def _mix_with_cache(
        self, t: int, call: LayerCall, cache: Any, own: torch.Tensor, choices: torch.Tensor
    ) -> torch.Tensor:
        """The authors' cached step: ``[batch, new, hidden]`` mixed hidden states of the
        batch's one choice ``j``; layer ``t``'s newly cached keys / values become the same
        mix of its own and ``j``'s (``j`` attends over layer ``t``'s past)."""
        j = int(choices[0, 0])
        own_weight, chosen_weight = self.mix_weights(t, own.dtype)
        if j == t:
            return own_weight * own + chosen_weight * own
        new = own.shape[1]
        chosen, keys, values = run_on_past_of(call, self._layers[j], j, layer_past(cache, t, new))
        mix_cached_layer(cache, t, new, (keys, values), own_weight, chosen_weight)
        return own_weight * own + chosen_weight * chosen

    def _refuse_partial_sequence(self, call: LayerCall, t: int) -> None:
        seen = cached_length(call.cache, t)
        if seen > call.hidden_states.shape[1]:
            raise ConfigError(
                f"MoLEx routing at layer {t} got {call.hidden_states.shape[1]} new tokens on top of "
                f"a KV cache of {seen - call.hidden_states.shape[1]}: the router needs the whole "
                "sequence; generate with use_cache=False"
            )

    def _valid_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        mask = self._padding_mask
        if mask is None:
            return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        if mask.shape != hidden.shape[:2]:
            raise ConfigError(
                f"MoLEx pools over the 2-D attention_mask [batch, seq] of the model call, but it "
                f"has shape {tuple(mask.shape)} and the layer input {tuple(hidden.shape[:2])}; pass "
                "a 2-D padding mask (and use_cache=False when generating)"
            )
        return mask != 0

    def _route_sequences(
        self, t: int, hidden: torch.Tensor, training: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sequence top-k at routed layer ``t``. Returns ``choices`` ``[batch, k]``
        (layer indices) and ``weights`` ``[batch, k]`` (value ``p~_j``, gradient through
        ``p_j``)."""
        pooled = pool_sequences(hidden, self._valid_tokens(hidden), self.cfg.pooling)
        probs = torch.softmax(self.router(t)(pooled).float(), dim=-1)
        top_p, top_i = probs.topk(self.cfg.top_k, dim=-1)
        renormalised = top_p / top_p.sum(dim=-1, keepdim=True)
        weights = (
            renormalised.detach() * top_p / top_p.detach().clamp(min=torch.finfo(top_p.dtype).tiny)
        )
        if training and self.cfg.balance_loss > 0:
            self._balance_terms[t] = switch_balance_loss(probs, top_i)
        return self.candidates[top_i], weights

    def _route_batch_vote(
        self, t: int, hidden: torch.Tensor, training: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The authors' routing at routed layer ``t``: every token (padding too) votes for
        its top-1 candidate; the most frequent vote (lowest index on ties) serves the
        whole batch with weight 1 and no gradient."""
        probs = torch.softmax(self.router(t)(hidden).float(), dim=-1).flatten(0, 1)
        votes = probs.argmax(dim=-1)
        winner = count_indices(votes, probs.shape[-1]).argmax()
        if training and self.cfg.balance_loss > 0:
            self._balance_terms[t] = (
                batch_winner_balance_loss(probs, winner)
                if self.cfg.balance_loss_type == "batch_winner"
                else switch_balance_loss(probs, votes.unsqueeze(1))
            )
        batch = hidden.shape[0]
        choices = self.candidates[winner].expand(batch, 1)
        return choices, torch.ones(batch, 1, device=hidden.device)

    def _run_grouped(
        self,
        t: int,
        call: LayerCall,
        own: torch.Tensor,
        choices: torch.Tensor,
        weights: torch.Tensor,
        training: bool,
    ) -> torch.Tensor:
        """``sum_j weights_j * u_j(z)`` ``[batch, seq, hidden]``: each distinct chosen
        layer runs once, on the examples that chose it (``u_t`` is reused, or run again
        in training with ``rerun_own_layer_when_chosen``)."""
        batch = own.shape[0]
        reuse_own = not (training and self.cfg.rerun_own_layer_when_chosen)
        mixed = torch.zeros_like(own)
        for j in torch.unique(choices).tolist():
            hit = choices == j
            weight = (weights * hit).sum(dim=1).to(own.dtype)
            rows = hit.any(dim=1).nonzero().squeeze(1)
            if rows.numel() == batch:
                out = own if j == t and reuse_own else call.run(self._layers[j], None)
                mixed = mixed + weight[:, None, None] * out
            else:
                out = (
                    own.index_select(0, rows)
                    if j == t and reuse_own
                    else call.run(self._layers[j], rows)
                )
                mixed = mixed.index_add(0, rows, weight.index_select(0, rows)[:, None, None] * out)
        return mixed

    def _run_capacity(
        self,
        t: int,
        call: LayerCall,
        own: torch.Tensor,
        choices: torch.Tensor,
        weights: torch.Tensor,
        training: bool,
    ) -> torch.Tensor:
        """``sum_j weights_j * u_j(z)`` ``[batch, seq, hidden]`` with static shapes: every
        candidate ``j != t`` runs on ``capacity`` rows, the examples that chose it first
        (earlier rows first); a chooser left out keeps its weight on ``u_t`` (``own``)."""
        batch = own.shape[0]
        capacity = min(
            batch,
            math.ceil(
                self.cfg.capacity_factor * batch * choices.shape[1] / len(self.candidate_layers)
            ),
        )
        earlier_first = torch.arange(batch, 0, -1, device=own.device)
        mixed = torch.zeros_like(own)
        own_weight = torch.zeros(batch, dtype=own.dtype, device=own.device)
        for j in self.candidate_layers:
            hit = choices == j
            weight = (weights * hit).sum(dim=1).to(own.dtype)
            if j == t:
                own_weight = own_weight + weight
                continue
            chose = hit.any(dim=1)
            rows = (chose * (batch + 1) + earlier_first).topk(capacity).indices
            gathered = torch.zeros_like(chose).index_fill(0, rows, True)
            served = chose & gathered
            out = call.run(self._layers[j], rows)
            mixed = mixed.index_add(
                0, rows, (weight * served).index_select(0, rows)[:, None, None] * out
            )
            dropped = chose & ~gathered
            own_weight = own_weight + weight * dropped
            if not training:
                self.dropped_routes[t] += dropped.sum()
        return mixed + own_weight[:, None, None] * own
