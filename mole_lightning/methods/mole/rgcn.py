"""Relational graph convolution (RGCN) over the padded word nodes of a batch.

One layer computes, for every word node ``v`` of every example,

    out[v] = x[v] @ root + bias + sum_r mean_{u -r-> v} x[u] @ weight[r]

(Schlichtkrull et al. 2018 without basis decomposition; messages of each relation are
averaged over the node's incoming edges of that relation, a node without such edges gets
nothing from it). Two implementations share the parameters and the math:

- ``DenseRelationalGraph``: a padded, degree-normalised adjacency ``[batch, W*R, W]``;
  one batched matmul gives every node's per-relation means, one matmul applies all
  relation weights. Faster on CPU and GPU at MoLE's sizes
  (``benchmarks/rgcn.md``).
- ``SparseRelationalGraph``: message passing with torch_geometric's scatter-mean over
  ``(target, relation)`` slots, then the same single matmul over relations. It equals
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

from mole_lightning.utils.tensors import count_indices


class DenseRelationalGraph:
    """Graphs of one batch as a padded adjacency, normalised by per-relation in-degree.

    Attributes:
        adjacency: ``[batch, W * R, W]``; entry ``[b, v * R + r, u]`` is the number of
            ``u -r-> v`` edges divided by the number of ``r``-edges into ``v``, so row
            ``v * R + r`` of ``adjacency @ x`` is the mean of ``v``'s incoming
            ``r``-messages.
    """

    def __init__(
        self,
        edge_index: torch.Tensor,
        edge_type: torch.Tensor,
        batch_size: int,
        max_words: int,
        num_relations: int,
    ) -> None:
        w, r = max_words, num_relations
        source, target = edge_index[0], edge_index[1]
        # slot (example, target, relation): the edge's share is 1 / edges into that slot
        slot = target * r + edge_type
        in_degree = count_indices(slot, batch_size * w * r)
        adjacency = torch.zeros(batch_size, w, r, w, device=edge_index.device)
        adjacency.index_put_(
            (target // w, target % w, edge_type, source % w),
            1.0 / in_degree[slot],
            accumulate=True,
        )
        self.adjacency = adjacency.view(batch_size, w * r, w)

    def propagate(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x [batch, W, in]``, ``weight [R, in, out]`` -> relation messages ``[batch, W, out]``."""
        batch, words, width = x.shape
        relations = weight.shape[0]
        means = torch.bmm(self.adjacency.to(x.dtype), x)
        return means.view(batch, words, relations * width) @ weight.view(relations * width, -1)


class SparseRelationalGraph:
    """Graphs of one batch as edge lists for scatter-mean message passing.

    Attributes:
        source: ``[E]`` global source node of every edge.
        slot: ``[E]`` ``target * R + relation`` of every edge: the row of the
            ``[num_nodes * R, in]`` per-relation means it is averaged into.
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
    ) -> None:
        self.num_nodes = batch_size * max_words
        self.num_relations = num_relations
        self.source = edge_index[0]
        self.slot = edge_index[1] * num_relations + edge_type

    def propagate(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x [batch, W, in]``, ``weight [R, in, out]`` -> relation messages ``[batch, W, out]``."""
        batch, words, width = x.shape
        flat = x.reshape(self.num_nodes, width)
        means = scatter(
            flat[self.source],
            self.slot,
            dim=0,
            dim_size=self.num_relations * self.num_nodes,
            reduce="mean",
        )
        per_node = means.view(batch, words, self.num_relations * width)
        return per_node @ weight.view(self.num_relations * width, -1)


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
