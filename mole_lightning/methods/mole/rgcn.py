"""Relational graph convolution (RGCN) over the padded word nodes of a batch.

One layer computes, for every word node ``v`` of every example,

    out[v] = x[v] @ root + bias + sum_r mean_{u -r-> v} x[u] @ weight[r]

(Schlichtkrull et al. 2018 without basis decomposition; messages of each relation are
averaged over the node's incoming edges of that relation, a node without such edges gets
nothing from it). Two implementations share the parameters and the math:

- ``DenseRelationalGraph``: a padded, degree-normalised adjacency ``[batch, W, R*W]`` and
  one batched matmul for all relations. Faster on CPU and GPU at MoLE's sizes
  (``benchmarks/rgcn.md``).
- ``SparseRelationalGraph``: message passing with torch_geometric's scatter-mean over
  ``(relation, target)`` slots, then one batched matmul over relations. It equals
  ``torch_geometric.nn.RGCNConv(aggr="mean")`` (tested), whose own ``segment_matmul`` path
  (taken on GPU when pyg-lib is installed) averages over all incoming edges instead of
  per relation.

A graph is prepared once per batch and graph kind, then shared by every RGCN layer of
every transformer layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.utils import scatter


class DenseRelationalGraph:
    """Graphs of one batch as a padded adjacency, normalised by per-relation in-degree.

    Attributes:
        adjacency: ``[batch, W, R * W]``; entry ``[b, v, r * W + u]`` is the number of
            ``u -r-> v`` edges divided by the number of ``r``-edges into ``v``.
    """

    def __init__(
        self, edge_index: torch.Tensor, edge_type: torch.Tensor, batch_size: int, max_words: int,
        num_relations: int,
    ) -> None:
        w = max_words
        source, target = edge_index[0], edge_index[1]
        counts = torch.zeros(batch_size, w, num_relations, w, device=edge_index.device)
        counts.index_put_(
            (target // w, target % w, edge_type, source % w),
            torch.ones_like(edge_type, dtype=counts.dtype),
            accumulate=True,
        )
        in_degree = counts.sum(-1, keepdim=True).clamp_min(1)
        self.adjacency = (counts / in_degree).view(batch_size, w, num_relations * w)

    def propagate(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x [batch, W, in]``, ``weight [R, in, out]`` -> relation messages ``[batch, W, out]``."""
        batch, words, _ = x.shape
        transformed = torch.einsum("bwi,rio->brwo", x, weight).reshape(batch, -1, weight.shape[-1])
        return torch.bmm(self.adjacency.to(transformed.dtype), transformed)


class SparseRelationalGraph:
    """Graphs of one batch as edge lists for scatter-mean message passing.

    Attributes:
        source: ``[E]`` global source node of every edge.
        slot: ``[E]`` ``relation * num_nodes + target`` of every edge.
        num_nodes: ``batch * W`` padded word nodes.
        num_relations: relation types R.
    """

    def __init__(
        self, edge_index: torch.Tensor, edge_type: torch.Tensor, batch_size: int, max_words: int,
        num_relations: int,
    ) -> None:
        self.num_nodes = batch_size * max_words
        self.num_relations = num_relations
        self.source = edge_index[0]
        self.slot = edge_type * self.num_nodes + edge_index[1]

    def propagate(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x [batch, W, in]``, ``weight [R, in, out]`` -> relation messages ``[batch, W, out]``."""
        batch, words, width = x.shape
        flat = x.reshape(self.num_nodes, width)
        means = scatter(
            flat[self.source], self.slot, dim=0, dim_size=self.num_relations * self.num_nodes,
            reduce="mean",
        )
        messages = torch.bmm(means.view(self.num_relations, self.num_nodes, width), weight).sum(0)
        return messages.view(batch, words, weight.shape[-1])


RelationalGraph = DenseRelationalGraph | SparseRelationalGraph

GRAPH_IMPLS: dict[str, type[DenseRelationalGraph] | type[SparseRelationalGraph]] = {
    "dense": DenseRelationalGraph,
    "pyg": SparseRelationalGraph,
}


class RelationalGraphConv(nn.Module):
    """One RGCN layer ``[batch, W, in] -> [batch, W, out]`` on a prepared graph.

    Parameters are named and initialised as in ``torch_geometric.nn.RGCNConv`` (Glorot
    ``weight [R, in, out]`` and ``root [in, out]``, zero ``bias [out]``).
    """

    def __init__(self, in_features: int, out_features: int, num_relations: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_relations, in_features, out_features))
        self.root = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        bound = math.sqrt(6.0 / (in_features + out_features))
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.root, -bound, bound)

    def forward(self, x: torch.Tensor, graph: RelationalGraph) -> torch.Tensor:
        return graph.propagate(x, self.weight) + x @ self.root + self.bias
