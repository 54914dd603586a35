"""Word graphs of parsed sentences: builders, subword alignment, the cache and batching."""

from mole_lightning.graphs.alignment import align_tokens_to_words
from mole_lightning.graphs.batch import WordGraphBatch
from mole_lightning.graphs.builders import GRAPH_BUILDER_VERSION, GRAPH_KINDS, build_graph
from mole_lightning.graphs.collate import collate_word_graphs
from mole_lightning.graphs.semantic import FUNCTION_RELATIONS, function_words, semantic_arcs
from mole_lightning.graphs.sentence_graphs import SentenceGraphs
from mole_lightning.graphs.store import GraphCacheError, GraphStore
from mole_lightning.graphs.word_graph import RELATION_NAMES, WordGraph

__all__ = [
    "FUNCTION_RELATIONS",
    "GRAPH_BUILDER_VERSION",
    "GRAPH_KINDS",
    "RELATION_NAMES",
    "GraphCacheError",
    "GraphStore",
    "SentenceGraphs",
    "WordGraph",
    "WordGraphBatch",
    "align_tokens_to_words",
    "build_graph",
    "collate_word_graphs",
    "function_words",
    "semantic_arcs",
]
