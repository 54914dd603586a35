"""State every MoLE layer of one model shares: the batch's word graphs, prepared once."""

from __future__ import annotations

import torch

from mole_lightning.errors import MoleError
from mole_lightning.graphs.batch import WordGraphBatch
from mole_lightning.methods.mole.rgcn import GRAPH_IMPLS, RelationalGraph
from mole_lightning.methods.mole.words import WordAlignment


class MissingGraphsError(MoleError, RuntimeError):
    """A graph expert ran without word graphs for the batch."""


class GraphBatchError(MoleError, ValueError):
    """The batch's word graphs do not fit the model or are malformed."""


class MoleContext:
    """The batch's word graphs in the form the experts read, prepared when they are set.

    ``set_graphs`` checks the graphs and builds the subword↔word alignment and every
    kind's RGCN graph at once, outside any compiled region, so the layers' forward only
    reads tensors of fixed shapes (``[batch, seq]`` and ``[batch, W * R, W]``) and
    ``torch.compile`` traces it without graph breaks.

    Attributes:
        pooling: ``"mean"`` or ``"first"`` subword pooling.
        rgcn_impl: ``"dense"`` or ``"pyg"`` (see ``rgcn.py``).
        num_relations: relation types the RGCN weights were built for.
        message_weights: ``"relation"`` or ``"label"`` (see ``rgcn.py``); ``"label"``
            needs the batch's ``label_groups``.
    """

    def __init__(
        self, pooling: str, rgcn_impl: str, num_relations: int, message_weights: str = "relation"
    ) -> None:
        self.pooling = pooling
        self.rgcn_impl = rgcn_impl
        self.num_relations = num_relations
        self.message_weights = message_weights
        self._graphs: WordGraphBatch | None = None
        self._alignment: WordAlignment | None = None
        self._prepared: dict[str, RelationalGraph] = {}

    def set_graphs(self, graphs: WordGraphBatch | None) -> None:
        """Checks and prepares the word graphs of the next forward (``None``: the batch has
        none). The value checks run on CPU graphs only: on an accelerator they would cost a
        host sync every step, and the data module's graphs (``collate_word_graphs``) are in
        range by construction."""
        self._graphs, self._alignment, self._prepared = None, None, {}
        if graphs is not None:
            check_graphs(graphs, self.num_relations, values=graphs.token_to_word.is_cpu)
            self._prepare(graphs)

    def alignment(self, hidden_states: torch.Tensor) -> WordAlignment:
        """Subword↔word alignment of the batch, checked against ``[batch, seq, hidden]``."""
        graphs = self._require_graphs("a graph expert", hidden_states.device)
        if tuple(hidden_states.shape[:2]) != tuple(graphs.token_to_word.shape):
            raise GraphBatchError(
                f"word graphs have token_to_word of shape {tuple(graphs.token_to_word.shape)} "
                f"but the hidden states are {tuple(hidden_states.shape[:2])} [batch, seq]; "
                "build the graphs from the same tokenised batch"
            )
        return self._alignment

    def graph(self, kind: str, device: torch.device) -> RelationalGraph:
        """The prepared ``kind`` graph of the batch."""
        graphs = self._require_graphs(f"the {kind} expert", device)
        if kind not in self._prepared:
            raise GraphBatchError(
                f"the {kind} expert needs '{kind}' graphs but the batch only has "
                f"{sorted(graphs.edges)}; enable that graph kind in the data module"
            )
        return self._prepared[kind]

    def _prepare(self, graphs: WordGraphBatch) -> None:
        self._graphs = graphs
        self._alignment = WordAlignment(graphs.token_to_word, graphs.max_words, self.pooling)
        batch = graphs.token_to_word.shape[0]
        self._prepared = {
            kind: GRAPH_IMPLS[self.rgcn_impl](
                edge_index,
                edge_type,
                batch,
                graphs.max_words,
                self.num_relations,
                self._label_groups(graphs, kind),
            )
            for kind, (edge_index, edge_type) in graphs.edges.items()
        }

    def _label_groups(self, graphs: WordGraphBatch, kind: str) -> torch.Tensor | None:
        if self.message_weights == "relation":
            return None
        if graphs.label_groups is None or kind not in graphs.label_groups:
            raise GraphBatchError(
                f"mole.message_weights='label' needs edge labels but the batch's '{kind}' "
                "graphs have none (WordGraphBatch.label_groups); the data module's graphs "
                "carry them, hand-made ones must set them"
            )
        return graphs.label_groups[kind]

    def _require_graphs(self, reader: str, device: torch.device) -> WordGraphBatch:
        if self._graphs is None:
            raise MissingGraphsError(
                f"{reader} needs word graphs but none were set for this batch: call "
                "MoleAdapters.set_graphs(batch_graphs) before the forward (the data module "
                "must build graphs for MoLE)"
            )
        if self._graphs.token_to_word.device != device:
            self._prepare(self._graphs.to(device))
        return self._graphs


def check_graphs(graphs: WordGraphBatch, num_relations: int, values: bool = True) -> None:
    """Raises ``GraphBatchError`` naming the first problem of ``graphs``.

    Checks the relation count and the tensors' shapes and, with ``values`` (one host sync
    on an accelerator), ``token_to_word`` in ``[-1, max_words)``, ``num_words`` per
    example, and every edge's nodes in range, in one example, with a valid type.
    """
    if graphs.num_relations != num_relations:
        raise GraphBatchError(
            f"word graphs have {graphs.num_relations} relation types but mole.num_relations="
            f"{num_relations}"
        )
    batch = graphs.token_to_word.shape[0]
    if graphs.num_words.shape != (batch,):
        raise GraphBatchError(
            f"num_words has shape {tuple(graphs.num_words.shape)}, expected ({batch},)"
        )
    for kind, (edge_index, edge_type) in graphs.edges.items():
        if (
            edge_index.dim() != 2
            or edge_index.shape[0] != 2
            or edge_type.shape != edge_index.shape[1:]
        ):
            raise GraphBatchError(
                f"'{kind}' edges: edge_index {tuple(edge_index.shape)} must be [2, E] and "
                f"edge_type {tuple(edge_type.shape)} must be [E]"
            )
    for kind, groups in (graphs.label_groups or {}).items():
        if kind in graphs.edges and groups.shape != graphs.edges[kind][1].shape:
            raise GraphBatchError(
                f"'{kind}' label_groups {tuple(groups.shape)} must be [E] like edge_type"
            )
    if not values:
        return
    w = graphs.max_words
    problems = {
        "token_to_word outside [-1, max_words)": (graphs.token_to_word < -1)
        | (graphs.token_to_word >= w),
        "num_words outside [0, max_words]": (graphs.num_words < 0) | (graphs.num_words > w),
    }
    for kind, (edge_index, edge_type) in graphs.edges.items():
        source, target = edge_index
        problems[f"'{kind}' edge node outside [0, batch*max_words)"] = (
            (edge_index < 0) | (edge_index >= batch * w)
        ).any(0)
        problems[f"'{kind}' edge between two examples"] = source // max(w, 1) != target // max(w, 1)
        problems[f"'{kind}' edge_type outside [0, num_relations)"] = (edge_type < 0) | (
            edge_type >= num_relations
        )
        if graphs.label_groups is not None and kind in graphs.label_groups:
            groups = graphs.label_groups[kind]
            problems[f"'{kind}' label_groups outside [0, E)"] = (groups < 0) | (
                groups >= groups.shape[0]
            )
    flags = torch.stack([p.any() for p in problems.values()]).tolist()
    if any(flags):
        first = next(name for name, bad in zip(problems, flags, strict=True) if bad)
        raise GraphBatchError(f"malformed word graphs: {first}")
