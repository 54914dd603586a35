"""One sentence's word graph: typed directed edges between word indices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RELATION_NAMES = {
    "syntactic": ("child->parent", "parent->child"),
    "semantic": ("child->parent", "parent->child"),
    "sequential": ("left->right", "right->left"),
}
"""What relations ``0`` and ``1`` of each graph kind mean."""


@dataclass(frozen=True)
class WordGraph:
    """Edges over the words of one ``ParsedSentence`` (no self-loops).

    Attributes:
        edge_index: ``[2, E]`` int64; row 0 the source word, row 1 the target word.
        edge_type: ``[E]`` int64 relation (``0`` child->parent or left->right, ``1`` the
            reverse direction).
        labels: ``[E]`` what each edge means (a UD relation, a relation plus the function
            words it stands for such as ``nmod:of``, or ``next``/``previous``).
    """

    edge_index: np.ndarray
    edge_type: np.ndarray
    labels: tuple[str, ...]

    @property
    def num_edges(self) -> int:
        return int(self.edge_type.shape[0])


def both_directions(arcs: Sequence[tuple[int, int, str]]) -> WordGraph:
    """A graph holding every ``(child, parent, label)`` arc as child->parent (relation 0)
    and parent->child (relation 1), in that order."""
    n = len(arcs)
    edge_index = np.empty((2, 2 * n), dtype=np.int64)
    edge_type = np.empty(2 * n, dtype=np.int64)
    for k, (child, parent, _) in enumerate(arcs):
        edge_index[0, k], edge_index[1, k] = child, parent
        edge_index[0, n + k], edge_index[1, n + k] = parent, child
    edge_type[:n], edge_type[n:] = 0, 1
    labels = tuple(label for _, _, label in arcs)
    return WordGraph(edge_index=edge_index, edge_type=edge_type, labels=labels + labels)
