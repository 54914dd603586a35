"""MoLE injected into an encoder: one mixture of experts per layer, prunable.

``MoleAdapters.attach(backbone, cfg)`` adds a ``MoleLayer`` in parallel to every encoder
layer (it reads the attention output; its output is added before the residual +
LayerNorm). Before each forward the owner calls ``set_graphs(batch_graphs)``. After the
exploration phase ``prune(top_k)`` deletes all but the top-k experts of every layer; the
kept ``structure`` rebuilds the pruned model (``attach(..., structure=...)``) to load its
checkpoint or to retrain it from scratch.

After ``prune`` the parameter objects change (experts deleted, gates restricted or
dropped): rebuild the optimizer (and DDP) over ``parameters()``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from mole_lightning.core.optimizer_groups import GroupSettings
from mole_lightning.errors import ConfigError
from mole_lightning.graphs.batch import WordGraphBatch
from mole_lightning.methods.injection import attach_parallel, encoder_layers
from mole_lightning.methods.mole.config import GRAPH_EXPERTS, MoleConfig
from mole_lightning.methods.mole.context import MoleContext
from mole_lightning.methods.mole.experts import build_expert
from mole_lightning.methods.mole.gate import ExpertGate

AUTHORS_RANKING_TEMPERATURE = 1e-3
"""The authors' softmax temperature when ranking layers for ``prune.rule=graph_layers``."""
GRAPH_LAYER_RANKINGS = ("authors", "softmax")


class MoleLayer(nn.Module):
    """The experts of one layer and their gate: ``[batch, seq, hidden] -> [batch, seq, hidden]``.

    With several experts the output is ``sum_e w_e * expert_e(h)``, ``w`` from the gate
    per example; with one expert left the gate is gone and the expert's output is used
    as is. ``experts`` keeps the canonical expert order, which is the gate's logit order.
    """

    def __init__(self, experts: dict[str, nn.Module], gate: ExpertGate | None) -> None:
        super().__init__()
        self.experts = nn.ModuleDict(experts)
        self.gate = gate
        self.last_weights_mean: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        experts = list(self.experts.values())
        if self.gate is None:
            return experts[0](hidden_states)
        if not self.training and self.gate.eval_mode == "argmax":
            return experts[int(self.gate.logits.argmax())](hidden_states)
        weights = self.gate(hidden_states.shape[0])
        if self.training:
            self.last_weights_mean = weights.detach().mean(0)
        out = 0
        for e, expert in enumerate(experts):
            out = out + weights[:, e, None, None].to(hidden_states.dtype) * expert(hidden_states)
        return out

    def importance(self) -> torch.Tensor:
        """``[kept experts]`` importance (softmax of the gate logits; 1 for a lone expert)."""
        if self.gate is None:
            return torch.ones(1)
        return self.gate.importance().detach().float().cpu()

    def keep(self, names: list[str]) -> None:
        """Deletes every expert not in ``names`` (a lone survivor also loses the gate)."""
        current = list(self.experts)
        for name in current:
            if name not in names:
                del self.experts[name]
        if len(self.experts) == 1:
            self.gate = None
        elif self.gate is not None:
            self.gate.restrict([current.index(name) for name in self.experts])
        self.last_weights_mean = None


class MoleAdapters(nn.Module):
    """The MoLE method: a ``MoleLayer`` per encoder layer plus their shared context.

    Build it with ``MoleAdapters.attach``. Tables over layers × experts
    (``importance()``, ``gate_weights_mean()``) have one column per name of
    ``expert_names`` (``cfg.experts`` order) and NaN where an expert was pruned away.

    Attributes:
        cfg: the MoLE settings.
        layers: the ``MoleLayer`` of every encoder layer.
    """

    def __init__(
        self,
        cfg: MoleConfig,
        layers: nn.ModuleList,
        context: MoleContext,
        handles: list[RemovableHandle],
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.layers = layers
        self._context = context
        self._handles = handles
        self._temperature = cfg.temperature.start

    @classmethod
    def attach(
        cls, backbone: nn.Module, cfg: MoleConfig, structure: list[list[str]] | None = None
    ) -> MoleAdapters:
        """Adds a MoLE layer to every encoder layer of ``backbone`` (freezes nothing).

        Args:
            backbone: a BERT, RoBERTa, DeBERTa-v2/v3 or MiniLM encoder.
            cfg: MoLE settings.
            structure: kept expert names per layer (from ``prune`` or a pruned
                checkpoint); ``None`` puts every expert of ``cfg.experts`` in every layer.

        Raises:
            ConfigError: ``structure`` has the wrong number of layers or names an expert
                that is not in ``cfg.experts``.
        """
        context = MoleContext(
            cfg.word_pooling, cfg.rgcn_impl, cfg.num_relations, cfg.message_weights
        )

        def make_layer(index: int, hidden: int) -> MoleLayer:
            names = cls._layer_experts(cfg, structure, index)
            experts = {name: build_expert(name, hidden, cfg, context) for name in names}
            gate = None
            if len(names) > 1:
                gate = ExpertGate(
                    len(names), cfg.temperature.start, cfg.hard, cfg.eval_mode, cfg.gate_sampling
                )
            return MoleLayer(experts, gate)

        if structure is not None:
            num_layers = len(encoder_layers(backbone))
            if len(structure) != num_layers:
                raise ConfigError(
                    f"MoLE structure has {len(structure)} layers but the backbone has {num_layers}"
                )
        layers, handles = attach_parallel(backbone, make_layer)
        device = next(backbone.parameters()).device
        return cls(cfg, layers, context, handles).to(device)

    @staticmethod
    def _layer_experts(cfg: MoleConfig, structure: list[list[str]] | None, index: int) -> list[str]:
        if structure is None:
            return list(cfg.experts)
        names = list(structure[index])
        if (
            not names
            or any(name not in cfg.experts for name in names)
            or len(set(names)) != len(names)
        ):
            raise ConfigError(
                f"MoLE structure of layer {index} is {names}: give one or more distinct names "
                f"from mole.experts={cfg.experts}"
            )
        return [name for name in cfg.experts if name in names]

    def remove(self) -> None:
        """Detaches the layers from the backbone (the backbone runs as without MoLE)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def set_graphs(self, graphs: WordGraphBatch | None) -> None:
        """Stores the word graphs of the next forward; graph experts raise without them."""
        self._context.set_graphs(graphs)

    @property
    def graph_kinds(self) -> list[str]:
        """Word-graph kinds the remaining experts read (``[]``: batches need no graphs)."""
        present = {name for names in self.structure for name in names}
        return [kind for kind in GRAPH_EXPERTS if kind in present]

    @property
    def needs_graphs(self) -> bool:
        """Whether any graph expert is left (an all-MLP model runs without graphs)."""
        return bool(self.graph_kinds)

    @property
    def temperature(self) -> float:
        """Gumbel-Softmax temperature of every gate."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"MoLE temperature must be positive, got {value}")
        self._temperature = float(value)
        for layer in self.layers:
            if layer.gate is not None:
                layer.gate.temperature.fill_(self._temperature)

    @property
    def expert_names(self) -> list[str]:
        """Column names of the layer × expert tables."""
        return list(self.cfg.experts)

    @property
    def structure(self) -> list[list[str]]:
        """Expert names present in every layer (``cfg.experts`` order)."""
        return [list(layer.experts) for layer in self.layers]

    def gate_logits(self) -> torch.Tensor:
        """``[layers, experts]`` every gate's logits (CPU); NaN for pruned experts and for
        layers without a gate (one expert left)."""
        rows = []
        for layer in self.layers:
            if layer.gate is None:
                rows.append(torch.full((len(layer.experts),), float("nan")))
            else:
                rows.append(layer.gate.logits.detach().float().cpu())
        return self._table(rows)

    def importance_entropy(self) -> torch.Tensor:
        """``[layers]`` entropy (nats) of each gate's importance ``softmax(logits)``:
        ``log(experts)`` for a uniform gate, 0 for a decided one; NaN without a gate."""
        entropies = []
        for layer in self.layers:
            if layer.gate is None:
                entropies.append(float("nan"))
            else:
                p = layer.gate.importance().detach().float()
                entropies.append(float(-(p * p.clamp_min(1e-30).log()).sum()))
        return torch.tensor(entropies)

    def optimizer_group(self) -> GroupSettings | None:
        """The gate logits with ``cfg.gate_lr`` / ``cfg.gate_weight_decay`` (their own
        AdamW group), or ``None`` when both follow the run's."""
        if self.cfg.gate_lr is None and self.cfg.gate_weight_decay is None:
            return None
        logits = tuple(layer.gate.logits for layer in self.layers if layer.gate is not None)
        return (
            GroupSettings(logits, self.cfg.gate_lr, self.cfg.gate_weight_decay) if logits else None
        )

    def importance(self) -> torch.Tensor:
        """``[layers, experts]`` softmax of each gate's logits (CPU); NaN for pruned experts,
        1 for the lone expert of a fully pruned layer."""
        return self._table([layer.importance() for layer in self.layers])

    def gate_weights_mean(self) -> torch.Tensor:
        """``[layers, experts]`` mean gate weight over the examples of the last training
        forward (CPU); NaN for pruned experts and for layers not yet run in training, 1 for
        the lone expert of a fully pruned layer."""
        rows = []
        for layer in self.layers:
            if layer.gate is None:
                rows.append(torch.ones(1))
            elif layer.last_weights_mean is None:
                rows.append(torch.full((len(layer.experts),), float("nan")))
            else:
                rows.append(layer.last_weights_mean.float().cpu())
        return self._table(rows)

    def prune(self, top_k: int = 1) -> list[list[str]]:
        """Keeps the ``top_k`` most important experts of every layer and deletes the rest
        (the paper's rule).

        Ties go to the expert earlier in ``cfg.experts`` (as the authors' argmax). Layers
        with at most ``top_k`` experts are unchanged. Returns the kept ``structure``.
        """
        if top_k < 1:
            raise ConfigError(f"MoLE prune top_k={top_k} must be at least 1")
        for layer in self.layers:
            names = list(layer.experts)
            order = torch.sort(layer.importance(), descending=True, stable=True).indices
            layer.keep([names[i] for i in order[:top_k].tolist()])
        return self.structure

    def prune_to_graph_layers(self, graph_layers: int, ranking: str = "authors") -> list[list[str]]:
        """Keeps a graph expert in only ``graph_layers`` layers and the MLP expert in every
        other layer (the authors' latest code). Returns the kept ``structure``.

        ``ranking="authors"`` (``prune.rule=graph_layers``): the authors' ranking. Each
        layer's scores are a float32 ``softmax(logits / 0.001)`` over its experts, which
        saturates (the winner of a layer scores 1.0 unless a rival is within ~0.02, the
        others underflow towards 0); a layer's score is its best graph expert's, and that
        expert is the one it keeps (the first in ``cfg.experts`` order on ties, e.g. when
        every graph expert underflowed to 0). The layers are sorted by score with a stable
        ascending sort and the last ``graph_layers`` are kept: ties, common after the
        saturation, go to the LATER layer.

        ``ranking="softmax"`` (``prune.rule=graph_layers_softmax``, this project's rule
        before the authors' ranking was reproduced): the same choice from the unsaturated
        importance ``softmax(logits)``, ties to the earlier expert and the EARLIER layer:
        it ranks layers by how confident their gates are, which the saturated scores
        cannot (they mostly say only whether a graph expert won the layer).

        Raises:
            ConfigError: ``graph_layers`` is outside ``[0, layers]``, a layer lacks the
                MLP expert or every graph expert, or ``ranking`` is unknown.
        """
        if ranking not in GRAPH_LAYER_RANKINGS:
            raise ConfigError(
                f"MoLE graph-layer ranking {ranking!r}; valid: {', '.join(GRAPH_LAYER_RANKINGS)}"
            )
        if not 0 <= graph_layers <= len(self.layers):
            raise ConfigError(
                f"MoLE prune.graph_layers={graph_layers} must be in [0, {len(self.layers)}]"
            )
        best: list[tuple[float, str]] = []
        for index, layer in enumerate(self.layers):
            names = list(layer.experts)
            graph = [i for i, n in enumerate(names) if n in GRAPH_EXPERTS]
            if "mlp" not in names or not graph or layer.gate is None:
                raise ConfigError(
                    f"MoLE prune.rule=graph_layers needs the mlp expert and a graph expert in "
                    f"every layer; layer {index} holds {names}"
                )
            if ranking == "authors":
                logits = layer.gate.logits.detach().to("cpu", torch.float32)
                scores = torch.softmax(logits / AUTHORS_RANKING_TEMPERATURE, dim=-1)
            else:
                scores = layer.importance()
            graph_scores = scores[graph]
            i = int(graph_scores.argmax())  # the first of equal maxima
            best.append((float(graph_scores[i]), names[graph[i]]))
        if ranking == "authors":
            ascending = sorted(range(len(best)), key=lambda index: (best[index][0], index))
            chosen = set(ascending[len(best) - graph_layers :])
        else:
            descending = sorted(range(len(best)), key=lambda index: (-best[index][0], index))
            chosen = set(descending[:graph_layers])
        for index, layer in enumerate(self.layers):
            layer.keep([best[index][1]] if index in chosen else ["mlp"])
        return self.structure

    def restructure(self, structure: list[list[str]]) -> None:
        """Prunes every layer in place to ``structure`` (kept expert names per layer), as
        ``prune`` left it: the step that precedes loading a pruned checkpoint."""
        if len(structure) != len(self.layers):
            raise ConfigError(
                f"MoLE structure has {len(structure)} layers but the model has {len(self.layers)}"
            )
        for index, (layer, names) in enumerate(zip(self.layers, structure, strict=True)):
            missing = [name for name in names if name not in layer.experts]
            if missing or not names:
                raise ConfigError(
                    f"MoLE structure of layer {index} is {names}; the layer holds {list(layer.experts)}"
                )
            layer.keep(list(names))

    def _table(self, rows: list[torch.Tensor]) -> torch.Tensor:
        table = torch.full((len(self.layers), len(self.cfg.experts)), float("nan"))
        for i, (layer, row) in enumerate(zip(self.layers, rows, strict=True)):
            columns = [self.cfg.experts.index(name) for name in layer.experts]
            table[i, columns] = row
        return table
