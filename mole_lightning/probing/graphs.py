"""Word graphs of the probe sentences, for checkpoints whose experts read them (MoLE).

The probed text of a sentence is its words joined by single spaces (``word_spans``). Its
graphs come from the same builders as training (``SentenceGraphs.from_parsed``):

- ``gold_graphs``: from the sentence's own parse (the gold UD tree of the CoNLL-U file, or
  for a bigram-shifted copy that tree with the two words exchanged), turned into the
  ``ParsedSentence`` a parser backend returns;
- ``parsed_graphs``: from a parser run on the probed texts through the graph cache of
  training (``GraphStore``: parsed once, then loaded), for the silver SST-2 set.

``layer_features`` then batches them with ``collate_word_graphs`` against each batch's
token offsets, exactly as the training collate does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mole_lightning.graphs import GraphStore, SentenceGraphs
from mole_lightning.graphs.store import texts_fingerprint
from mole_lightning.parsing.sentence import ParsedSentence
from mole_lightning.probing.features import word_spans
from mole_lightning.probing.properties import ProbeSentence


def to_parsed(sentence: ProbeSentence) -> ParsedSentence:
    """The ``ParsedSentence`` of a probe sentence over its probed text (words joined by
    spaces); unknown tags are ``X`` and unknown lemmas the words themselves."""
    text, spans = word_spans(sentence.words)
    n = len(sentence.words)
    return ParsedSentence.build(
        text,
        sentence.words,
        spans,
        sentence.heads,
        sentence.deprels,
        sentence.upos or ("X",) * n,
        sentence.lemmas or sentence.words,
    )


def gold_graphs(parses: Sequence[ProbeSentence], kinds: Sequence[str]) -> list[SentenceGraphs]:
    """``[N]`` graphs of the ``kinds`` built from each sentence's own parse."""
    return [SentenceGraphs.from_parsed(to_parsed(s), kinds) for s in parses]


def parsed_graphs(
    sentences: Sequence[tuple[str, ...]],
    parser_cfg: Mapping,
    cache_dir: str | Path,
    name: str,
    kinds: Sequence[str],
) -> list[SentenceGraphs]:
    """``[N]`` graphs of the probed texts parsed by the ``parser_cfg`` parser, through the
    graph cache under ``cache_dir`` (key ``probe-<name>-<fingerprint of the texts>``)."""
    texts = [word_spans(words)[0] for words in sentences]
    store = GraphStore(parser_cfg, cache_dir, kinds)
    key = f"probe-{name}-{texts_fingerprint(texts)[:16]}"
    store.prepare(key, texts)
    return store.load(key, texts)
