"""RGCN layers and subword↔word alignment against per-example Python references."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import RGCNConv

from mole_lightning.graphs.batch import WordGraphBatch
from mole_lightning.methods.mole import (
    DenseRelationalGraph,
    GraphBatchError,
    MoleContext,
    RelationalGraphConv,
    SparseRelationalGraph,
)
from mole_lightning.methods.mole.synthetic import random_word_graphs
from mole_lightning.methods.mole.words import WordAlignment


def graphs_with_empty_example(
    num_relations: int, seed: int = 0, edges_per_word: float = 1.0
) -> WordGraphBatch:
    """Random graphs of 5 examples where example 2 has no words at all."""
    g = torch.Generator().manual_seed(seed)
    graphs = random_word_graphs(
        5,
        16,
        9,
        min_words=4,
        num_relations=num_relations,
        edges_per_word=edges_per_word,
        generator=g,
    )
    graphs.token_to_word[2] = -1
    graphs.num_words[2] = 0
    for kind, (edge_index, edge_type) in graphs.edges.items():
        keep = edge_index[0] // graphs.max_words != 2
        graphs.edges[kind] = (edge_index[:, keep], edge_type[keep])
    return graphs


def naive_rgcn(x: torch.Tensor, edge_index, edge_type, conv: RelationalGraphConv, max_words: int):
    """Example by example, node by node, relation by relation."""
    batch, words, _ = x.shape
    out = torch.zeros(batch, words, conv.bias.shape[0], dtype=x.dtype)
    edges = list(
        zip(edge_index[0].tolist(), edge_index[1].tolist(), edge_type.tolist(), strict=True)
    )
    for b in range(batch):
        for v in range(words):
            total = x[b, v] @ conv.root + conv.bias
            for r in range(conv.weight.shape[0]):
                sources = [s for s, t, rel in edges if t == b * max_words + v and rel == r]
                if sources:
                    assert all(s // max_words == b for s in sources)
                    mean = torch.stack([x[b, s % max_words] for s in sources]).mean(0)
                    total = total + mean @ conv.weight[r]
            out[b, v] = total
    return out


@pytest.mark.parametrize("num_relations", [2, 5])
def test_dense_and_sparse_rgcn_equal_naive_reference(num_relations):
    graphs = graphs_with_empty_example(num_relations)
    edge_index, edge_type = graphs.edges["syntactic"]
    target = edge_index[1]
    in_degree = torch.bincount(target, minlength=5 * graphs.max_words).view(5, graphs.max_words)
    real = torch.arange(graphs.max_words) < graphs.num_words.unsqueeze(1)
    assert (real & (in_degree == 0)).any(), "the test needs isolated word nodes"
    assert (in_degree > 1).any() and (edge_index[0] == edge_index[1]).any()

    torch.manual_seed(1)
    conv = RelationalGraphConv(6, 4, num_relations).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(5, graphs.max_words, 6, dtype=torch.double)
    expected = naive_rgcn(x, edge_index, edge_type, conv, graphs.max_words)
    for impl in (DenseRelationalGraph, SparseRelationalGraph):
        graph = impl(edge_index, edge_type, 5, graphs.max_words, num_relations)
        torch.testing.assert_close(conv(x, graph), expected, atol=1e-5, rtol=0)


def test_float32_gradients_of_dense_and_sparse_agree():
    graphs = random_word_graphs(
        8, 40, 30, num_relations=3, generator=torch.Generator().manual_seed(3)
    )
    edge_index, edge_type = graphs.edges["semantic"]
    conv = RelationalGraphConv(16, 16, 3)
    results = []
    for impl in (DenseRelationalGraph, SparseRelationalGraph):
        x = torch.randn(8, 30, 16, generator=torch.Generator().manual_seed(4), requires_grad=True)
        conv.zero_grad()
        out = conv(x, impl(edge_index, edge_type, 8, 30, 3))
        (out * torch.linspace(-1, 1, 16)).sum().backward()
        results.append((out, x.grad, conv.weight.grad.clone(), conv.root.grad.clone()))
    for dense, sparse in zip(*results, strict=True):
        torch.testing.assert_close(dense, sparse, atol=1e-5, rtol=1e-5)


def test_matches_torch_geometric_rgcnconv_mean():
    graphs = graphs_with_empty_example(3, seed=5, edges_per_word=2.5)
    edge_index, edge_type = graphs.edges["sequential"]
    conv = RelationalGraphConv(8, 8, 3)
    with torch.no_grad():
        conv.bias.normal_()
    reference = RGCNConv(8, 8, 3, aggr="mean")
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(5, graphs.max_words, 8)
    expected = reference(x.view(-1, 8), edge_index, edge_type).view(5, graphs.max_words, 8)
    graph = DenseRelationalGraph(edge_index, edge_type, 5, graphs.max_words, 3)
    torch.testing.assert_close(conv(x, graph), expected, atol=1e-5, rtol=0)


def test_batch_without_any_word():
    graphs = random_word_graphs(3, 6, 0)
    conv = RelationalGraphConv(4, 4, 2)
    for impl in (DenseRelationalGraph, SparseRelationalGraph):
        graph = impl(*graphs.edges["syntactic"], 3, 0, 2)
        assert conv(torch.zeros(3, 0, 4), graph).shape == (3, 0, 4)
    alignment = WordAlignment(graphs.token_to_word, 0, "mean")
    assert torch.equal(
        alignment.scatter(alignment.pool(torch.randn(3, 6, 4))), torch.zeros(3, 6, 4)
    )


def naive_pool(states, token_to_word, max_words, pooling):
    batch, seq, d = states.shape
    out = torch.zeros(batch, max_words, d, dtype=states.dtype)
    for b in range(batch):
        for w in range(max_words):
            positions = [t for t in range(seq) if token_to_word[b, t] == w]
            if positions:
                out[b, w] = (
                    states[b, positions].mean(0) if pooling == "mean" else states[b, positions[0]]
                )
    return out


@pytest.mark.parametrize("pooling", ["mean", "first"])
def test_pool_and_scatter_equal_loop_reference(pooling):
    graphs = graphs_with_empty_example(2, seed=7)
    batch, seq = graphs.token_to_word.shape
    covered = torch.zeros(batch, graphs.max_words, dtype=torch.bool)
    for b in range(batch):
        covered[b, graphs.token_to_word[b][graphs.token_to_word[b] >= 0]] = True
    real = torch.arange(graphs.max_words) < graphs.num_words.unsqueeze(1)
    assert (real & ~covered).any(), "the test needs words whose subwords were truncated"
    assert (torch.bincount(graphs.token_to_word[graphs.token_to_word >= 0]) > 1).any()

    states = torch.randn(batch, seq, 5, dtype=torch.double)
    alignment = WordAlignment(graphs.token_to_word, graphs.max_words, pooling)
    words = alignment.pool(states)
    torch.testing.assert_close(
        words, naive_pool(states, graphs.token_to_word, graphs.max_words, pooling)
    )

    word_states = torch.randn(batch, graphs.max_words, 5, dtype=torch.double)
    back = alignment.scatter(word_states)
    for b in range(batch):
        for t in range(seq):
            w = int(graphs.token_to_word[b, t])
            assert torch.equal(
                back[b, t], word_states[b, w] if w >= 0 else torch.zeros(5, dtype=torch.double)
            )


def test_malformed_graphs_are_rejected_by_name():
    context = MoleContext("mean", "dense", num_relations=2)
    graphs = random_word_graphs(2, 10, 4, min_words=2, generator=torch.Generator().manual_seed(0))
    edge_index, edge_type = graphs.edges["semantic"]
    bad = edge_index.clone()
    bad[1, 0] = (bad[0, 0] + graphs.max_words) % (2 * graphs.max_words)
    graphs.edges["semantic"] = (bad, edge_type)
    with pytest.raises(GraphBatchError, match="'semantic' edge between two examples"):
        context.set_graphs(graphs)
    graphs.edges["semantic"] = (edge_index, edge_type + 2)
    with pytest.raises(GraphBatchError, match="'semantic' edge_type outside"):
        context.set_graphs(graphs)
    with pytest.raises(GraphBatchError, match="mole.num_relations=3"):
        MoleContext("mean", "dense", num_relations=3).set_graphs(random_word_graphs(2, 10, 4))
