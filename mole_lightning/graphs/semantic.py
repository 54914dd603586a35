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
5. DM-style controlled subjects (control and raising): an ``xcomp`` without a subject of
   its own gets its governor's object, or else its governor's (own or controlled) subject,
   as ``nsubj:xsubj`` ("Mary wanted to buy": ``Mary -nsubj:xsubj-> buy``; "makes me want
   to go": ``me -> want``, ``me -> go``).
6. DM-style relative clauses: a relative pronoun (``that``, ``which``, ``who``, ...) that
   is an argument of an ``acl:relcl`` verb becomes a function word, and the head noun
   takes its place as the verb's argument with its relation ("the book that Mary bought":
   ``book -obj-> bought`` instead of ``bought -acl:relcl-> book``).

It is still not DM (docs/methods.md, "Parsers and word graphs"): prepositions stay edge labels, and
directions follow the dependency tree, not DM's predicate -> argument arcs.
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
OBJECT_RELATIONS = frozenset({"obj", "iobj"})
RELATIVE_PRONOUNS = frozenset({"that", "which", "who", "whom"})
"""Lemmas of relative pronouns that stand for the head noun of an ``acl:relcl`` clause."""


def _base(relation: str) -> str:
    return relation.split(":", 1)[0]


def function_words(sentence: ParsedSentence) -> list[bool]:
    """``[n]`` whether each word is a function word (gets no semantic edge): function
    relations, their ``fixed`` parts, and relative pronouns (``relative_pronouns``)."""
    base = [_base(rel) for rel in sentence.deprels]
    function = [b in FUNCTION_RELATIONS for b in base]
    for i, b in enumerate(base):
        head = sentence.heads[i]
        if b == "fixed" and head and function[head - 1]:
            function[i] = True
    for pronoun in relative_pronouns(sentence):
        function[pronoun] = True
    return function


def relative_pronouns(sentence: ParsedSentence) -> dict[int, int]:
    """``{pronoun: clause verb}``: relative pronouns that are a core or oblique argument
    (``nsubj``, ``obj``, ``iobj``, ``obl``, with subtypes) of an ``acl:relcl`` verb."""
    found = {}
    for i, (head, rel) in enumerate(zip(sentence.heads, sentence.deprels, strict=True)):
        verb = head - 1
        if (
            verb >= 0
            and sentence.deprels[verb] == "acl:relcl"
            and sentence.lemmas[i].lower() in RELATIVE_PRONOUNS
            and _base(rel) in ("nsubj", "obj", "iobj", "obl")
        ):
            found[i] = verb
    return found


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
    for pronoun, verb in relative_pronouns(sentence).items():
        noun = governor.get(verb, -1)
        if noun >= 0 and not function[verb]:  # the head noun becomes the verb's argument
            arcs[(noun, verb)] = label(rels[pronoun], markers(pronoun))
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

    def dependents_of(g: int, relations: frozenset[str]) -> list[int]:
        return [k for k in content if governor[k] == g and base[k] in relations]

    controllers: dict[int, int | None] = {}

    def controller(c: int, depth: int = 0) -> int | None:
        """The object, else the (own or controlled) subject, of ``c``'s governor."""
        if c not in controllers:
            g = governor[c]
            found = (dependents_of(g, OBJECT_RELATIONS) or dependents_of(g, SUBJECT_RELATIONS))[:1]
            if not found and base[g] == "xcomp" and not function[g] and depth < n:
                found = [k for k in [controller(g, depth + 1)] if k is not None]
            controllers[c] = found[0] if found else None
        return controllers[c]

    for c in content:
        if base[c] == "xcomp" and governor[c] >= 0 and not dependents_of(c, SUBJECT_RELATIONS):
            subject = controller(c)
            if subject is not None:
                add(subject, c, "nsubj:xsubj")
    return [(d, g, text) for (d, g), text in arcs.items()]


def semantic_graph(sentence: ParsedSentence) -> WordGraph:
    """The content-word graph, each arc as dependent->governor (relation 0) and
    governor->dependent (relation 1)."""
    return both_directions(semantic_arcs(sentence))
