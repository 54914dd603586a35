"""The cached, tokenizer-independent graphs of one text: word spans plus edges per kind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mole_lightning.graphs.builders import GRAPH_KINDS, check_kinds
from mole_lightning.graphs.word_graph import WordGraph
from mole_lightning.parsing.sentence import ParsedSentence

INDEX_DTYPE = np.int32
TYPE_DTYPE = np.int8
LABEL_DTYPE = np.int16


@dataclass(slots=True)
class SentenceGraphs:
    """Everything the collate step needs about one text, as light numpy arrays.

    Attributes:
        spans: ``[n, 2]`` int32 character ``(start, end)`` of each word in the text.
        edges: graph kind -> ``(edge_index [2, E] int32, edge_type [E] int8)`` over local
            word indices ``0..n-1``.
        labels: graph kind -> ``[E]`` int16 label id of every edge, numbered in order of
            first occurrence within the text (equal ids = equal labels, such as
            ``nmod:of``); only compared within one text.
    """

    spans: np.ndarray
    edges: dict[str, tuple[np.ndarray, np.ndarray]]
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_words(self) -> int:
        return int(self.spans.shape[0])

    @classmethod
    def from_parsed(
        cls, sentence: ParsedSentence, kinds: Sequence[str] = tuple(GRAPH_KINDS)
    ) -> SentenceGraphs:
        """Builds the ``kinds`` graphs of a parsed sentence."""
        spans = np.asarray(sentence.spans, dtype=INDEX_DTYPE).reshape(-1, 2)
        graphs = {k: GRAPH_KINDS[k](sentence) for k in check_kinds(kinds)}
        return cls(
            spans=spans,
            edges={k: compact(g) for k, g in graphs.items()},
            labels={k: label_ids(g) for k, g in graphs.items()},
        )


def compact(graph: WordGraph) -> tuple[np.ndarray, np.ndarray]:
    """``(edge_index [2, E] int32, edge_type [E] int8)`` of a ``WordGraph``."""
    return graph.edge_index.astype(INDEX_DTYPE), graph.edge_type.astype(TYPE_DTYPE)


def label_ids(graph: WordGraph) -> np.ndarray:
    """``[E]`` int16 id of every edge's label, numbered in order of first occurrence."""
    ids: dict[str, int] = {}
    return np.fromiter(
        (ids.setdefault(label, len(ids)) for label in graph.labels), LABEL_DTYPE, graph.num_edges
    )
