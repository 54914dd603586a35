"""The graph-kind registry: name -> pure builder ``ParsedSentence -> WordGraph``."""

from __future__ import annotations

from collections.abc import Callable

from mole_lightning.graphs.semantic import semantic_graph
from mole_lightning.graphs.sequential import sequential_graph
from mole_lightning.graphs.syntactic import syntactic_graph
from mole_lightning.graphs.word_graph import WordGraph
from mole_lightning.parsing.sentence import ParsedSentence

GRAPH_BUILDER_VERSION = "2"
"""Changes whenever any builder's output changes; graph caches are keyed by it."""

GRAPH_KINDS: dict[str, Callable[[ParsedSentence], WordGraph]] = {
    "syntactic": syntactic_graph,
    "semantic": semantic_graph,
    "sequential": sequential_graph,
}


def check_kinds(kinds) -> list[str]:
    """Returns ``kinds`` as a list; raises naming any kind that is not in ``GRAPH_KINDS``."""
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in GRAPH_KINDS]
    if unknown:
        raise ValueError(f"unknown graph kind(s) {unknown}: choose from {list(GRAPH_KINDS)}")
    return kinds


def build_graph(kind: str, sentence: ParsedSentence) -> WordGraph:
    """The ``kind`` graph (``syntactic``, ``semantic`` or ``sequential``) of ``sentence``."""
    check_kinds([kind])
    return GRAPH_KINDS[kind](sentence)
