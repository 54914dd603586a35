"""Probing a MoLE checkpoint whose experts read word graphs: the graphs of the probe
sentences come from their gold UD trees through the training builders, and the experts
really run on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mole_lightning.graphs import SentenceGraphs
from mole_lightning.parsing import build_parser
from mole_lightning.probing.cli import load_probed_model, probe
from mole_lightning.probing.features import layer_features
from mole_lightning.probing.graphs import gold_graphs
from mole_lightning.probing.properties import build_probe_data, read_conllu, swap_adjacent
from mole_lightning.train import train
from tests.conftest import CONF_DIR, compose
from tests.test_mole_training import mole_overrides

KINDS = ["syntactic", "semantic", "sequential"]


def compose_probe(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("probe.yaml", overrides=overrides)


def edges(graphs: SentenceGraphs, kind: str, relation: int = 0) -> list[tuple[int, int]]:
    edge_index, edge_type = graphs.edges[kind]
    return sorted(map(tuple, edge_index[:, edge_type == relation].T.tolist()))


@pytest.fixture(scope="module")
def ud(shared_data: Path):
    return read_conllu(shared_data / "ud" / "en_ewt-ud-dev.conllu")


def test_gold_graphs_of_a_hand_checked_sentence(ud, shared_data: Path) -> None:
    """ "From(0) the(1) AP(2) comes(3) this(4) story(5) :(6)": From, the -> AP -> comes;
    this -> story -> comes; : -> comes. The semantic graph keeps the content words:
    AP -obl:from-> comes, story -nsubj-> comes."""
    graphs = gold_graphs(ud[:1], KINDS)[0]
    assert graphs.spans.tolist() == [
        [0, 4],
        [5, 8],
        [9, 11],
        [12, 17],
        [18, 22],
        [23, 28],
        [29, 30],
    ]
    assert edges(graphs, "syntactic") == [(0, 2), (1, 2), (2, 3), (4, 5), (5, 3), (6, 3)]
    assert edges(graphs, "syntactic", 1) == [(2, 0), (2, 1), (3, 2), (3, 5), (3, 6), (5, 4)]
    assert edges(graphs, "semantic") == [(2, 3), (5, 3)]
    assert edges(graphs, "sequential") == [(i, i + 1) for i in range(6)]
    # the same graphs (and labels) as the conllu backend gives training for this sentence
    parser = build_parser(
        {"name": "conllu", "file": str(shared_data / "ud" / "en_ewt-ud-dev.conllu")}
    )
    backend = SentenceGraphs.from_parsed(parser.parse(["From the AP comes this story :"])[0], KINDS)
    for kind in KINDS:
        assert edges(graphs, kind) == edges(backend, kind)
        assert edges(graphs, kind, 1) == edges(backend, kind, 1)
        assert graphs.labels[kind].tolist() == backend.labels[kind].tolist()
    # a bigram-shifted copy keeps the tree, the two words at their new places:
    # "the(0) From(1) AP(2) ...": the -> AP, From -> AP
    swapped = gold_graphs([swap_adjacent(ud[0], 0)], KINDS)[0]
    assert edges(swapped, "syntactic") == [(0, 2), (1, 2), (2, 3), (4, 5), (5, 3), (6, 3)]
    assert swap_adjacent(ud[0], 0).deprels[:2] == ("det", "case")
    # "From the AP this(3) comes(4) story :": AP, story, : -> comes (now 5); this -> story
    assert swap_adjacent(ud[0], 3).heads == (3, 3, 5, 6, 0, 5, 5)


def test_probe_a_mole_checkpoint_with_graph_experts(
    ud, shared_data: Path, glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """A real MoLE run (MiniLM, spaCy graphs of RTE, pruned at step 3) is probed on 12 UD
    sentences: its features differ from the plain backbone's after the embeddings, and
    in every layer from the first one that kept a graph expert they change when the
    graphs lose their edges (so the graph experts ran on the gold graphs)."""
    run = tmp_path / "run"
    train(
        compose(
            mole_overrides(glue_dir, "minilm", 6, 3, "logger=none", "trainer.val_check_interval=6"),
            run,
            cache_dir,
        )
    )
    structure = json.loads((run / "mole_structure.json").read_text())["structure"]
    graph_layers = [t for t, kept in enumerate(structure) if set(kept) & set(KINDS)]
    assert graph_layers, f"no layer kept a graph expert: {structure}"

    overrides = [
        f"ud_file={shared_data}/ud/en_ewt-ud-dev.conllu",
        f"cache_dir={tmp_path}/probe",
        "max_sentences=12",
        "batch_size=8",
    ]
    mole = probe(compose_probe([*overrides, f"ckpt_path={run}", f"out_dir={tmp_path}/out"]))
    plain = probe(compose_probe([*overrides, f"out_dir={tmp_path}/plain"]))
    assert (tmp_path / "out" / "probe_ud.png").is_file()
    assert mole["probe"].keys() == plain["probe"].keys()

    def cached(pretrained: bool) -> list[np.ndarray]:
        (folder,) = [
            p
            for p in (tmp_path / "probe").glob("*/ud-*")
            if p.parent.name.startswith("pretrained-") == pretrained
        ]
        return [np.load(folder / f"layer{i}.npy") for i in range(7)]

    with_graphs, backbone = cached(False), cached(True)
    np.testing.assert_array_equal(with_graphs[0], backbone[0])  # embeddings: untouched
    for t in range(1, 7):
        assert not np.allclose(with_graphs[t], backbone[t]), f"layer {t} equals the backbone"

    model = load_probed_model(str(run), compose_probe([]).backbone)
    data = build_probe_data(ud[:12], seed=0)
    graphs = gold_graphs(data.parses, KINDS)
    edgeless = [
        SentenceGraphs(g.spans, {k: (e[:, :0], t[:0]) for k, (e, t) in g.edges.items()}, {})
        for g in graphs
    ]
    args = (model.encoder, model.tokenizer, data.sentences, torch.device("cpu"), 8, 128)
    again = layer_features(*args, graphs)
    without = layer_features(*args, edgeless)
    np.testing.assert_allclose(again, np.stack(with_graphs), atol=1e-5)
    first = graph_layers[0] + 1  # layer t's output is row t + 1
    for row in range(first):
        np.testing.assert_allclose(again[row], without[row], atol=1e-6)
    for row in range(first, 7):
        assert not np.allclose(again[row], without[row], atol=1e-6), f"row {row}: graphs unused"
    with pytest.raises(ValueError, match="reads .* word graphs"):
        layer_features(*args)


def test_silver_sst2_graphs_go_through_the_training_graph_cache(tmp_path: Path) -> None:
    """dataset=sst2: spaCy parses the probed texts once into the graph cache of training
    (``GraphStore``); a second call loads them without a parser."""
    from mole_lightning.probing.cli import probe_graphs
    from mole_lightning.probing.properties import ProbeData

    cfg = compose_probe(["dataset=sst2", f"graph_cache_dir={tmp_path}/graphs"])
    data = ProbeData(
        sentences=[("it", "'s", "a", "charming", "journey", "."), ("a", "dull", "film")],
        labels={},
    )
    graphs = probe_graphs(cfg, data, KINDS)
    assert [g.num_words for g in graphs] == [6, 3]
    assert edges(graphs[1], "sequential") == [(0, 1), (1, 2)]
    assert edges(graphs[1], "syntactic") == [(0, 2), (1, 2)]  # a, dull -> film
    (cached,) = (tmp_path / "graphs").glob("probe-sst2-*.spacy.*.npz")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("mole_lightning.graphs.store.build_parser", None)  # a parse would fail
        again = probe_graphs(cfg, data, KINDS)
    assert [edges(g, "syntactic") for g in again] == [edges(g, "syntactic") for g in graphs]
    assert cached.is_file()
