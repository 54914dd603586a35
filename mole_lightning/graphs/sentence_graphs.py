"""The cached, tokenizer-independent graphs of one text: word spans plus edges per kind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mole_lightning.graphs.builders import GRAPH_KINDS, check_kinds
from mole_lightning.graphs.word_graph import WordGraph
from mole_lightning.parsing.sentence import ParsedSentence

INDEX_DTYPE = np.int32
TYPE_DTYPE = np.int8


@dataclass(slots=True)
class SentenceGraphs:
    """Everything the collate step needs about one text, as light numpy arrays.

    Attributes:
        spans: ``[n, 2]`` int32 character ``(start, end)`` of each word in the text.
        edges: graph kind -> ``(edge_index [2, E] int32, edge_type [E] int8)`` over local
            word indices ``0..n-1``.
    """

    spans: np.ndarray
    edges: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def num_words(self) -> int:
        return int(self.spans.shape[0])

    @classmethod
    def from_parsed(
        cls, sentence: ParsedSentence, kinds: Sequence[str] = tuple(GRAPH_KINDS)
    ) -> SentenceGraphs:
        """Builds the ``kinds`` graphs of a parsed sentence."""
        spans = np.asarray(sentence.spans, dtype=INDEX_DTYPE).reshape(-1, 2)
        return cls(
            spans=spans,
            edges={k: compact(GRAPH_KINDS[k](sentence)) for k in check_kinds(kinds)},
        )


def compact(graph: WordGraph) -> tuple[np.ndarray, np.ndarray]:
    """``(edge_index [2, E] int32, edge_type [E] int8)`` of a ``WordGraph`` (labels dropped)."""
    return graph.edge_index.astype(INDEX_DTYPE), graph.edge_type.astype(TYPE_DTYPE)
