"""Relational graph convolution (RGCN) over the padded word nodes of a batch.

One layer computes, for every word node ``v`` of every example,

    out[v] = x[v] @ root + bias + sum_{edges u -r-> v} norm[e] * x[u] @ weight[r]

(Schlichtkrull et al. 2018 without basis decomposition). ``message_weights`` sets ``norm``:

- ``"relation"``: ``1 / (edges into v of relation r)``, so each relation's messages are
  averaged (a node without such edges gets nothing from it);
- ``"label"`` (the MoLE authors): ``1 / (edges into v with the same relation and label)``,
  so children labelled ``{A, A, B}`` give ``(A + A) / 2 + B``.

With ``single_relation`` every edge is read as relation 0 (same ``norm``): the MoLE
authors' convolutions after the first. Two implementations share the parameters and the math:

- ``DenseRelationalGraph``: a padded, normalised adjacency ``[batch, W*R, W]``;
  one batched matmul gives every node's per-relation sums, one matmul applies all
  relation weights. Faster on CPU and GPU at MoLE's sizes
  (``benchmarks/rgcn.md``).
- ``SparseRelationalGraph``: message passing with torch_geometric's scatter-sum of the
  weighted messages over ``(target, relation)`` slots, then the same single matmul over
  relations. With ``"relation"`` weights it equals ``torch_geometric.nn.RGCNConv(aggr="mean")``
  (tested), whose own ``segment_matmul`` path (taken on GPU when pyg-lib is installed)
  averages over all incoming edges instead of per relation.

A graph is prepared once per batch and graph kind, then shared by every RGCN layer of
every transformer layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.utils import scatter

from mole_lightning.utils.tensors import count_indices


def message_weights(
    edge_index: torch.Tensor,
    edge_type: torch.Tensor,
    num_slots: int,
    num_relations: int,
    label_groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[E]`` weight of every edge's message: ``1 / (edges into its target with its
    relation)``, or with ``label_groups`` (``[E]`` ids in ``[0, E)`` shared by the edges with
    the same target, relation and label) ``1 / (edges of its group)``. ``num_slots`` is the
    number of word nodes times ``num_relations``."""
    if label_groups is None:
        slot = edge_index[1] * num_relations + edge_type
        return 1.0 / count_indices(slot, num_slots)[slot]
    return 1.0 / count_indices(label_groups, label_groups.shape[0])[label_groups]


class DenseRelationalGraph:
    """Graphs of one batch as a padded adjacency holding every edge's message weight.

    Attributes:
        adjacency: ``[batch, W * R, W]``; entry ``[b, v * R + r, u]`` is the summed
            weight of the ``u -r-> v`` edges, so row ``v * R + r`` of ``adjacency @ x`` is
            ``v``'s weighted sum of incoming ``r``-messages.
        single: ``[batch, W, W]`` the same summed over relations (every edge as relation 0).
    """

    def __init__(
        self,
        edge_index: torch.Tensor,
        edge_type: torch.Tensor,
        batch_size: int,
        max_words: int,
        num_relations: int,
        label_groups: torch.Tensor | None = None,
    ) -> None:
        w, r = max_words, num_relations
        source, target = edge_index[0], edge_index[1]
        norm = message_weights(edge_index, edge_type, batch_size * w * r, r, label_groups)
        adjacency = torch.zeros(batch_size, w, r, w, device=edge_index.device)
        adjacency.index_put_(
            (target // w, target % w, edge_type, source % w), norm, accumulate=True
        )
        self.single = adjacency.sum(2)
        self.adjacency = adjacency.view(batch_size, w * r, w)

    def propagate(
        self, x: torch.Tensor, weight: torch.Tensor, single_relation: bool = False
    ) -> torch.Tensor:
        """``x [batch, W, in]``, ``weight [R, in, out]`` -> relation messages ``[batch, W, out]``
        (with ``single_relation`` every edge uses ``weight[0]``)."""
        batch, words, width = x.shape
        if single_relation:
            return torch.bmm(self.single.to(x.dtype), x) @ weight[0]
        relations = weight.shape[0]
        sums = torch.bmm(self.adjacency.to(x.dtype), x)
        return sums.view(batch, words, relations * width) @ weight.view(relations * width, -1)


class SparseRelationalGraph:
    """Graphs of one batch as edge lists for weighted scatter-sum message passing.

    Attributes:
        source: ``[E]`` global source node of every edge.
        target: ``[E]`` global target node of every edge.
        slot: ``[E]`` ``target * R + relation`` of every edge: the row of the
            ``[num_nodes * R, in]`` per-relation sums it is added into.
        norm: ``[E]`` weight of every edge's message.
        num_nodes: ``batch * W`` padded word nodes.
        num_relations: relation types R.
    """

    def __init__(
        self,
        edge_index: torch.Tensor,
        edge_type: torch.Tensor,
        batch_size: int,
        max_words: int,
        num_relations: int,
        label_groups: torch.Tensor | None = None,
    ) -> None:
        self.num_nodes = batch_size * max_words
        self.num_relations = num_relations
        self.source, self.target = edge_index[0], edge_index[1]
        self.slot = self.target * num_relations + edge_type
        self.norm = message_weights(
            edge_index, edge_type, self.num_nodes * num_relations, num_relations, label_groups
        )

    def propagate(
        self, x: torch.Tensor, weight: torch.Tensor, single_relation: bool = False
    ) -> torch.Tensor:
        """``x [batch, W, in]``, ``weight [R, in, out]`` -> relation messages ``[batch, W, out]``
        (with ``single_relation`` every edge uses ``weight[0]``)."""
        batch, words, width = x.shape
        flat = x.reshape(self.num_nodes, width)
        messages = flat[self.source] * self.norm.to(x.dtype).unsqueeze(1)
        if single_relation:
            sums = scatter(messages, self.target, dim=0, dim_size=self.num_nodes, reduce="sum")
            return sums.view(batch, words, width) @ weight[0]
        sums = scatter(
            messages, self.slot, dim=0, dim_size=self.num_relations * self.num_nodes, reduce="sum"
        )
        per_node = sums.view(batch, words, self.num_relations * width)
        return per_node @ weight.view(self.num_relations * width, -1)


RelationalGraph = DenseRelationalGraph | SparseRelationalGraph

GRAPH_IMPLS: dict[str, type[DenseRelationalGraph] | type[SparseRelationalGraph]] = {
    "dense": DenseRelationalGraph,
    "pyg": SparseRelationalGraph,
}


RGCN_INITS = ("glorot", "dgl")


class RelationalGraphConv(nn.Module):
    """One RGCN layer ``[batch, W, in] -> [batch, W, out]`` on a prepared graph.

    Parameters are named as in ``torch_geometric.nn.RGCNConv``: ``weight [R, in, out]``,
    ``root [in, out]``, zero ``bias [out]``. ``init``:

    - ``"glorot"``: both weights ``U(+-gain * sqrt(6 / (in + out)))`` (RGCNConv's Glorot
      init times ``gain``);
    - ``"dgl"``: DGL's ``RelGraphConv`` (DGL >= 0.8, the MoLE authors'): the relation
      weights as ``TypedLinear`` draws them, ``U(+-1 / sqrt(in))``, the self-loop weight
      ``xavier_uniform_`` with ``calculate_gain("relu")`` (``U(+-sqrt(2) * sqrt(6 / (in +
      out)))``), zero bias; ``gain`` is unused. Drawn in that order (relations, then
      self loop), so a seeded DGL-style draw gives the same tensors.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_relations: int,
        gain: float = 1.0,
        init: str = "glorot",
    ) -> None:
        super().__init__()
        if init not in RGCN_INITS:
            raise ValueError(f"RGCN init {init!r}; valid: {', '.join(RGCN_INITS)}")
        self.weight = nn.Parameter(torch.empty(num_relations, in_features, out_features))
        self.root = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        if init == "dgl":
            bound = 1.0 / math.sqrt(in_features)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.xavier_uniform_(self.root, gain=nn.init.calculate_gain("relu"))
            return
        bound = gain * math.sqrt(6.0 / (in_features + out_features))
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.root, -bound, bound)

    def forward(
        self, x: torch.Tensor, graph: RelationalGraph, single_relation: bool = False
    ) -> torch.Tensor:
        """``x [batch, W, in]`` -> ``[batch, W, out]``; ``single_relation``: every edge is
        relation 0."""
        return graph.propagate(x, self.weight, single_relation) + x @ self.root + self.bias
