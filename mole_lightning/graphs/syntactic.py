"""The syntactic graph: the dependency tree, in both directions."""

from __future__ import annotations

from mole_lightning.graphs.word_graph import WordGraph, both_directions
from mole_lightning.parsing.sentence import ParsedSentence


def syntactic_graph(sentence: ParsedSentence) -> WordGraph:
    """Every dependency arc as child->parent and parent->child, labelled with its relation:
    ``2 * (n - #roots)`` edges."""
    arcs = [
        (i, head - 1, rel)
        for i, (head, rel) in enumerate(zip(sentence.heads, sentence.deprels, strict=True))
        if head
    ]
    return both_directions(arcs)
