"""The MoLE authors' graph expert, written from its equations in plain torch, against ours.

The reference reads a hand-made labelled word graph node by node and edge by edge:

- ``direct`` (authors): ``h = relu(pool(x))``; per conv ``h = dropout(relu(conv(h)))``,
  widths ``hidden -> bottleneck -> hidden``; ``projected`` (ours): ``down``, convs at the
  bottleneck with ReLU between, LayerNorm, ``up``.
- a conv: ``out[v] = h[v] @ root + bias + sum_{u -r-> v} h[u] @ W[r] / n(e)`` where
  ``n(e)`` counts the edges into ``v`` with the same direction (``relation`` weights) or
  the same direction and label (``label`` weights, authors); with the single-relation
  trait the convs after the first use ``W[0]`` for every edge (same ``n(e)``).
- tokens without a word get ``0`` (ours) or their input (authors' ``identity``).

The project's ``GraphExpert`` gets the same weights copied in and must agree to 1e-6.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mole_lightning.errors import ConfigError
from mole_lightning.graphs import SentenceGraphs, collate_word_graphs
from mole_lightning.graphs.batch import WordGraphBatch
from mole_lightning.methods import method_config
from mole_lightning.methods.mole import GraphBatchError, MoleConfig, MoleContext
from mole_lightning.methods.mole.experts import GraphExpert
from tests.conftest import compose

HIDDEN, BOTTLENECK, SEQ = 6, 3, 9
# per example: the word of every token (-1: CLS, SEP, padding)
TOKEN_WORDS = [
    [-1, 0, 1, 1, 2, 3, 4, -1, -1],
    [-1, 0, 1, 2, 2, 2, -1, -1, -1],
]
# per example: (child, parent, label) arcs; each is an edge child->parent (direction 0) and
# parent->child (direction 1). Word 1 of example 0 has children labelled {A, A, B}.
ARCS = [
    [(0, 1, "A"), (2, 1, "A"), (3, 1, "B"), (4, 3, "A"), (1, 4, "C")],
    [(0, 1, "nsubj"), (2, 1, "obj"), (0, 2, "obj")],
]
MAX_WORDS = 5


def labelled_edges(b: int) -> list[tuple[int, int, int, str]]:
    """``(source, target, direction, label)`` edges of example ``b`` (local word ids)."""
    arcs = ARCS[b]
    return [(c, p, 0, lab) for c, p, lab in arcs] + [(p, c, 1, lab) for c, p, lab in arcs]


def word_graph_batch() -> WordGraphBatch:
    """The hand-made graphs as a batch; label groups numbered here, by a dict."""
    sources, targets, types, groups, ids = [], [], [], [], {}
    for b in range(len(ARCS)):
        for s, t, d, label in labelled_edges(b):
            sources.append(b * MAX_WORDS + s)
            targets.append(b * MAX_WORDS + t)
            types.append(d)
            groups.append(ids.setdefault((b, t, d, label), len(ids)))
    edge_index = torch.tensor([sources, targets])
    return WordGraphBatch(
        token_to_word=torch.tensor(TOKEN_WORDS),
        num_words=torch.tensor([5, 3]),
        edges={"syntactic": (edge_index, torch.tensor(types))},
        max_words=MAX_WORDS,
        label_groups={"syntactic": torch.tensor(groups)},
    )


def reference_expert(x, expert, cfg: MoleConfig) -> torch.Tensor:
    """The expert's output ``[batch, seq, hidden]`` computed from the equations above."""
    convs = [(c.weight, c.root, c.bias) for c in expert.convs]
    out = torch.zeros_like(x) if cfg.wordless_tokens == "zero" else x.clone()
    for b, token_words in enumerate(TOKEN_WORDS):
        n = max(token_words) + 1
        nodes = [
            torch.stack([x[b, i] for i, w in enumerate(token_words) if w == word]).mean(0)
            for word in range(n)
        ]
        if cfg.graph_expert == "direct":
            h = [torch.relu(v) for v in nodes]
        else:
            h = [v @ expert.down.weight.T + expert.down.bias for v in nodes]
        edges = labelled_edges(b)
        for i, (weight, root, bias) in enumerate(convs):
            new = []
            for v in range(n):
                total = h[v] @ root + bias
                for s, t, d, label in edges:
                    if t != v:
                        continue
                    same = [
                        e
                        for e in edges
                        if e[1] == v
                        and e[2] == d
                        and (cfg.message_weights == "relation" or e[3] == label)
                    ]
                    relation = 0 if cfg.later_convs_single_relation and i > 0 else d
                    total = total + h[s] @ weight[relation] / len(same)
                new.append(total)
            if cfg.graph_expert == "direct":
                h = [torch.relu(v) for v in new]
            elif i < len(convs) - 1:
                h = [torch.relu(v) for v in new]
            else:
                h = new
        if cfg.graph_expert == "projected":
            eps = expert.norm.eps
            h = [(v - v.mean()) / (v.var(unbiased=False) + eps).sqrt() for v in h]
            h = [v * expert.norm.weight + expert.norm.bias for v in h]
            h = [v @ expert.up.weight.T + expert.up.bias for v in h]
        for i, w in enumerate(token_words):
            if w >= 0:
                out[b, i] = h[w]
    return out


def build(cfg: MoleConfig, seed: int = 0) -> GraphExpert:
    torch.manual_seed(seed)
    context = MoleContext(cfg.word_pooling, cfg.rgcn_impl, cfg.num_relations, cfg.message_weights)
    expert = GraphExpert("syntactic", HIDDEN, cfg, context).eval()
    with torch.no_grad():
        for p in expert.parameters():
            p.normal_(0, 0.5)  # every weight matters (no zero up-projection, no zero bias)
    context.set_graphs(word_graph_batch())
    return expert


TRAITS = list(
    itertools.product(
        ["projected", "direct"], ["zero", "identity"], ["relation", "label"], [False, True]
    )
)


@pytest.mark.parametrize("rgcn_impl", ["dense", "pyg"])
@pytest.mark.parametrize(("graph_expert", "wordless", "weights", "single"), TRAITS)
def test_expert_matches_the_reference_with_each_trait_on_and_off(
    rgcn_impl, graph_expert, wordless, weights, single
) -> None:
    cfg = MoleConfig(
        bottleneck=BOTTLENECK,
        rgcn_impl=rgcn_impl,
        graph_expert=graph_expert,
        wordless_tokens=wordless,
        message_weights=weights,
        later_convs_single_relation=single,
        zero_init_up=graph_expert == "projected",
    )
    expert = build(cfg)
    x = torch.randn(len(TOKEN_WORDS), SEQ, HIDDEN, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, reference = expert(x), reference_expert(x, expert, cfg)
    assert torch.allclose(ours, reference, atol=1e-6), (ours - reference).abs().max()


def test_label_weights_differ_from_relation_means_where_labels_repeat() -> None:
    """Word 1 of example 0 has children {A, A, B}: (A + A) / 2 + B, not (A + A + B) / 3."""
    outs = {}
    x = torch.randn(len(TOKEN_WORDS), SEQ, HIDDEN, generator=torch.Generator().manual_seed(2))
    for weights in ("relation", "label"):
        cfg = MoleConfig(
            bottleneck=BOTTLENECK,
            rgcn_layers=1,
            graph_expert="direct",
            zero_init_up=False,
            message_weights=weights,
        )
        with torch.no_grad():
            outs[weights] = build(cfg)(x)
    differs = (outs["relation"] - outs["label"]).abs().amax(-1) > 1e-6
    # they differ exactly on words with two incoming edges of one direction: example 0
    # word 1 (tokens 2, 3: {A, A, B}); example 1 words 0 and 1 (tokens 1, 2: {nsubj, obj},
    # summed instead of averaged)
    assert differs.tolist() == [
        [i in (2, 3) for i in range(SEQ)],
        [i in (1, 2) for i in range(SEQ)],
    ]


def test_the_paper_preset_builds_the_authors_expert(tmp_path) -> None:
    cfg = method_config(compose(["experiment=mole_paper", "task=rte"], tmp_path).method)
    assert (cfg.graph_expert, cfg.wordless_tokens, cfg.message_weights) == (
        "direct",
        "identity",
        "label",
    )
    assert cfg.later_convs_single_relation and not cfg.zero_init_up
    assert (cfg.bottleneck, cfg.rgcn_layers, cfg.num_relations) == (50, 2, 2)
    cfg.bottleneck = BOTTLENECK
    expert = build(cfg)
    x = torch.randn(len(TOKEN_WORDS), SEQ, HIDDEN, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(expert(x), reference_expert(x, expert, cfg), atol=1e-6)


def test_initialisation_no_op_or_not() -> None:
    """Ours starts as a no-op on words (zero up-projection); the authors' does not."""
    x = torch.randn(len(TOKEN_WORDS), SEQ, HIDDEN, generator=torch.Generator().manual_seed(4))
    context = MoleContext("mean", "dense", 2, "relation")
    context.set_graphs(word_graph_batch())
    ours = GraphExpert("syntactic", HIDDEN, MoleConfig(bottleneck=BOTTLENECK), context)
    assert torch.equal(ours(x), torch.zeros_like(x))
    for graph_expert in ("projected", "direct"):
        cfg = MoleConfig(bottleneck=BOTTLENECK, graph_expert=graph_expert, zero_init_up=False)
        expert = GraphExpert("syntactic", HIDDEN, cfg, context).eval()
        assert expert(x)[0, 1:7].abs().sum() > 0
    with pytest.raises(ConfigError, match="zero_init_up"):
        MoleConfig(graph_expert="direct", zero_init_up=True)


def test_label_weights_need_labelled_graphs() -> None:
    graphs = word_graph_batch()
    groups = graphs.label_groups["syntactic"]
    graphs.label_groups = None
    with pytest.raises(GraphBatchError, match="message_weights='label'"):
        MoleContext("mean", "dense", 2, "label").set_graphs(graphs)
    graphs.label_groups = {"syntactic": groups[:-1]}
    with pytest.raises(GraphBatchError, match="label_groups .* must be \\[E\\]"):
        MoleContext("mean", "dense", 2, "label").set_graphs(graphs)
    graphs.label_groups = {"syntactic": groups + len(groups)}
    with pytest.raises(GraphBatchError, match="label_groups outside"):
        MoleContext("mean", "dense", 2, "label").set_graphs(graphs)


def test_collated_label_groups_follow_target_direction_and_label() -> None:
    """Two texts of one example, labels numbered per text: the batch's groups are equal
    exactly for edges with the same target, direction and label."""
    first = SentenceGraphs(
        spans=np.array([[0, 1], [2, 3], [4, 5]], np.int32),
        edges={
            "syntactic": (
                np.array([[0, 2, 1, 1], [1, 1, 0, 2]], np.int32),
                np.array([0, 0, 1, 1], np.int8),
            )
        },
        labels={"syntactic": np.array([0, 1, 0, 0], np.int16)},  # A, B, A, A
    )
    second = SentenceGraphs(
        spans=np.array([[0, 1], [2, 3]], np.int32),
        edges={"syntactic": (np.array([[0, 1], [1, 0]], np.int32), np.array([0, 1], np.int8))},
        labels={"syntactic": np.array([0, 0], np.int16)},  # id 0 here is another label
    )
    offsets = [(0, 0), (0, 1), (2, 3), (4, 5), (0, 0), (0, 1), (2, 3), (0, 0)]
    sequence_ids = [None, 0, 0, 0, None, 1, 1, None]
    batch = collate_word_graphs([(first, second)], [offsets], [sequence_ids], 8, ["syntactic"])
    (source, target), edge_type = batch.edges["syntactic"]
    groups = batch.label_groups["syntactic"]
    assert target.tolist() == [1, 1, 0, 2, 4, 3]
    labels = [0, 1, 0, 0, 100, 100]  # the second text's label 0 is not the first's
    expected = {}
    for e, key in enumerate(zip(target.tolist(), edge_type.tolist(), labels, strict=True)):
        expected.setdefault(key, []).append(e)
    assert groups[0] != groups[1]  # into word 1, direction 0: labels A and B
    same = [[int(groups[a] == groups[b]) for b in range(6)] for a in range(6)]
    assert same == [
        [int(any(a in g and b in g for g in expected.values())) for b in range(6)] for a in range(6)
    ]
    assert groups.min() >= 0 and groups.max() < 6


def test_projected_expert_output_does_not_grow_with_the_rgcn_weights() -> None:
    """The failure behind MoLE's flat CoLA runs (issue 16): every RGCN layer sums its
    relations' messages and the root term, so the up-projection's input grew with the
    RGCN weights, and a drifting up-projection made an early layer's expert outgrow the
    residual stream. With the LayerNorm before the up-projection, scaling every RGCN
    layer's weights by 10 (its bias by 10 per layer so far, so the stack's output is
    scaled by 100) leaves the expert's output unchanged (ReLU is positively homogeneous,
    LayerNorm scale-invariant), and the up-projection reads words at unit variance."""
    cfg = MoleConfig(bottleneck=BOTTLENECK, zero_init_up=False)
    expert = build(cfg)
    with torch.no_grad():
        expert.norm.reset_parameters()  # the LayerNorm as initialised: weight 1, bias 0
    x = torch.randn(len(TOKEN_WORDS), SEQ, HIDDEN, generator=torch.Generator().manual_seed(5))
    seen = {}
    expert.up.register_forward_hook(lambda m, a, o: seen.__setitem__("up_input", a[0]))
    with torch.no_grad():
        before = expert(x)
        for i, conv in enumerate(expert.convs):
            conv.weight.mul_(10.0)
            conv.root.mul_(10.0)
            conv.bias.mul_(10.0 ** (i + 1))
        after = expert(x)
    assert torch.allclose(after, before, rtol=1e-3, atol=1e-3), (after - before).abs().max()
    words = seen["up_input"]
    assert torch.allclose(words.var(-1, unbiased=False), torch.ones(words.shape[:-1]), atol=1e-3)


def dgl_relgraphconv_draws(in_feat: int, out_feat: int, num_rels: int) -> dict[str, torch.Tensor]:
    """DGL's ``RelGraphConv(in_feat, out_feat, num_rels)`` initialisation, from its source
    (DGL >= 0.8, no regularizer): ``TypedLinear`` draws the relation weights
    ``W [num_rels, in, out]`` from ``U(-1/sqrt(in), 1/sqrt(in))``, then ``h_bias`` is
    zeroed, then ``loop_weight [in, out]`` gets ``xavier_uniform_`` with
    ``calculate_gain('relu')``."""
    weight = torch.empty(num_rels, in_feat, out_feat)
    torch.nn.init.uniform_(weight, -1 / np.sqrt(in_feat), 1 / np.sqrt(in_feat))
    bias = torch.zeros(out_feat)
    loop = torch.empty(in_feat, out_feat)
    torch.nn.init.xavier_uniform_(loop, gain=torch.nn.init.calculate_gain("relu"))
    return {"weight": weight, "root": loop, "bias": bias}


def test_the_paper_preset_initialises_its_convolutions_like_dgl(tmp_path) -> None:
    """``rgcn_init=dgl`` (the preset) draws exactly DGL's tensors from the same seed; at
    RoBERTa-base's sizes the relation weights start at std 0.021 (768 -> 50) and 0.082
    (50 -> 768), against 0.070 for both with ``glorot`` (ours); the self weights are
    0.070 either way."""
    cfg = method_config(compose(["experiment=mole_paper", "task=rte"], tmp_path).method)
    assert cfg.rgcn_init == "dgl" and cfg.mlp_zero_down_bias
    context = MoleContext(cfg.word_pooling, cfg.rgcn_impl, cfg.num_relations, cfg.message_weights)
    torch.manual_seed(7)
    expert = GraphExpert("syntactic", HIDDEN, MoleConfig(**{**vars(cfg), "bottleneck": 4}), context)
    torch.manual_seed(7)
    for conv, (fin, fout) in zip(expert.convs, [(HIDDEN, 4), (4, HIDDEN)], strict=True):
        for name, tensor in dgl_relgraphconv_draws(fin, fout, 2).items():
            assert torch.equal(getattr(conv, name).detach(), tensor), name

    stds = {}
    for init in ("dgl", "glorot"):
        torch.manual_seed(0)
        big = GraphExpert("syntactic", 768, MoleConfig(**{**vars(cfg), "rgcn_init": init}), context)
        stds[init] = [
            (round(c.weight.std().item(), 3), round(c.root.std().item(), 3)) for c in big.convs
        ]
        assert all(not c.bias.any() for c in big.convs)
    assert stds["dgl"] == [(0.021, 0.07), (0.082, 0.07)]
    assert stds["glorot"] == [(0.07, 0.07), (0.07, 0.07)]


def test_the_paper_preset_mlp_expert_starts_with_a_zero_down_bias(tmp_path) -> None:
    """The authors' MLP expert: down-projection bias 0 (ours: nn.Linear's U(+-1/sqrt(in)));
    the down weights are drawn the same, the up-projection is zero in both."""
    from mole_lightning.methods.adapter import BottleneckAdapter

    cfg = method_config(compose(["experiment=mole_paper", "task=rte"], tmp_path).method)
    experts = {}
    for zero in (True, False):
        torch.manual_seed(3)
        experts[zero] = BottleneckAdapter(
            HIDDEN, MoleConfig(**{**vars(cfg), "mlp_zero_down_bias": zero}).mlp_adapter()
        )
    assert not experts[True].down.bias.any() and experts[False].down.bias.abs().min() > 0
    assert torch.equal(experts[True].down.weight, experts[False].down.weight)
    for expert in experts.values():
        assert not expert.up.weight.any() and not expert.up.bias.any()
