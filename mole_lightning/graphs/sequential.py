"""The sequential graph: each word linked to its neighbours."""

from __future__ import annotations

import numpy as np

from mole_lightning.graphs.word_graph import WordGraph
from mole_lightning.parsing.sentence import ParsedSentence


def sequential_graph(sentence: ParsedSentence) -> WordGraph:
    """Word ``i`` -> ``i+1`` (relation 0, ``next``) and ``i+1`` -> ``i`` (relation 1,
    ``previous``): ``2 * (n - 1)`` edges."""
    n = max(len(sentence) - 1, 0)
    left = np.arange(n, dtype=np.int64)
    edge_index = np.concatenate([np.stack([left, left + 1]), np.stack([left + 1, left])], axis=1)
    edge_type = np.repeat(np.array([0, 1], dtype=np.int64), n)
    return WordGraph(edge_index, edge_type, ("next",) * n + ("previous",) * n)
