"""The semantic graph: content words linked by labelled relations, derived from a UD parse.

No maintained semantic-dependency parser (e.g. for the DM formalism) ships for offline use,
so this module derives a content-word graph from the dependency tree, in the spirit of
enhanced UD. It is the ONLY place the derivation lives: a real semantic parser replaces
``semantic_arcs``.

1. Function words (relations in ``FUNCTION_RELATIONS`` with any subtype, and the ``fixed``
   parts of a multi-word function word such as "because of") get no edges; they stay as
   nodes so that word indices match the parse.
2. Every content word is linked to its nearest content ancestor, skipping function words.
3. Function words that link two content words become the edge's label: the lemmas of the
   dependent's ``case``/``mark`` children (``cc`` for a conjunct) extend its relation,
   so "the capital of France" gives ``France -nmod:of-> capital``, "cats and dogs" gives
   ``dogs -conj:and-> cats``. A relation that already has a subtype (``nmod:poss``,
   ``obl:agent``) keeps it.
4. Conjuncts are propagated: each conjunct gets the first conjunct's governor (with the
   same relation), and the first conjunct's dependents that the coordination shares -- those
   after the last conjunct, and its subject where a conjunct has none of its own -- attach
   to every conjunct ("John bought and ate apples": ``John -nsubj-> ate``).
"""

from __future__ import annotations

from mole_lightning.graphs.word_graph import WordGraph, both_directions
from mole_lightning.parsing.sentence import ParsedSentence

FUNCTION_RELATIONS = frozenset({"case", "mark", "det", "aux", "cop", "punct", "cc", "expl", "clf"})
"""UD relations (matched without their subtype: ``aux:pass``, ``det:predet``, ``cc:preconj``
too) whose dependents are function words."""

MARKER_RELATIONS = frozenset({"case", "mark"})
"""Function words that label the edge of the content word they attach to."""

SUBJECT_RELATIONS = frozenset({"nsubj", "csubj"})
_CONJUNCT_MARKERS = frozenset({"cc"})


def _base(relation: str) -> str:
    return relation.split(":", 1)[0]


def function_words(sentence: ParsedSentence) -> list[bool]:
    """``[n]`` whether each word is a function word (gets no semantic edge)."""
    base = [_base(rel) for rel in sentence.deprels]
    function = [b in FUNCTION_RELATIONS for b in base]
    for i, b in enumerate(base):
        head = sentence.heads[i]
        if b == "fixed" and head and function[head - 1]:
            function[i] = True
    return function


def semantic_arcs(sentence: ParsedSentence) -> list[tuple[int, int, str]]:
    """``(dependent, governor, label)`` arcs between content words (0-based word indices)."""
    n = len(sentence)
    heads = [head - 1 for head in sentence.heads]
    rels = sentence.deprels
    base = [_base(rel) for rel in rels]
    function = function_words(sentence)
    children: list[list[int]] = [[] for _ in range(n)]
    for i, head in enumerate(heads):
        if head >= 0:
            children[head].append(i)

    def content_governor(i: int) -> int:
        g, steps = heads[i], 0
        while g >= 0 and function[g] and steps < n:
            g, steps = heads[g], steps + 1
        return g

    def markers(i: int, wanted: frozenset[str] = MARKER_RELATIONS) -> str:
        """Lemmas of ``i``'s function-word children in ``wanted`` (with their fixed parts)."""
        words = []
        for k in children[i]:
            if function[k] and base[k] in wanted:
                fixed = [f for f in children[k] if base[f] == "fixed"]
                words.extend(sentence.lemmas[m].lower() for m in sorted([k, *fixed]))
        return "_".join(words)

    def label(relation: str, marker: str) -> str:
        return f"{relation}:{marker}" if marker and ":" not in relation else relation

    arcs: dict[tuple[int, int], str] = {}

    def add(dependent: int, governor: int, text: str) -> None:
        pair = (dependent, governor)
        if dependent != governor and pair not in arcs and (governor, dependent) not in arcs:
            arcs[pair] = text

    content = [i for i in range(n) if not function[i]]
    governor = {i: content_governor(i) for i in content}
    for i in content:
        if governor[i] >= 0:
            wanted = _CONJUNCT_MARKERS if base[i] == "conj" else MARKER_RELATIONS
            add(i, governor[i], label(rels[i], markers(i, wanted)))

    groups: dict[int, list[int]] = {}
    for c in content:
        if base[c] != "conj" or governor[c] < 0:
            continue
        first, steps = governor[c], 0
        while base[first] == "conj" and governor.get(first, -1) >= 0 and steps < n:
            first, steps = governor[first], steps + 1
        if not function[first]:
            groups.setdefault(first, []).append(c)
    for first, conjuncts in groups.items():
        last = max(conjuncts)
        if governor[first] >= 0:
            for c in conjuncts:
                add(c, governor[first], label(rels[first], markers(c) or markers(first)))
        dependents = [d for d in content if governor[d] == first and d not in conjuncts]
        for c in conjuncts:
            own = {base[k] for k in content if governor[k] == c}
            for d in dependents:
                shared = d > last or (base[d] in SUBJECT_RELATIONS and not own & SUBJECT_RELATIONS)
                if shared and base[d] != "conj" and base[d] not in own:
                    add(d, c, label(rels[d], markers(d)))
    return [(d, g, text) for (d, g), text in arcs.items()]


def semantic_graph(sentence: ParsedSentence) -> WordGraph:
    """The content-word graph, each arc as dependent->governor (relation 0) and
    governor->dependent (relation 1)."""
    return both_directions(semantic_arcs(sentence))
