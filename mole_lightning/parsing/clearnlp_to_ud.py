"""Converts a ClearNLP-style dependency parse (spaCy's English models) to UD form.

spaCy's English models label arcs with the ClearNLP scheme, whose trees differ from
Universal Dependencies in shape as well as in names:

- a preposition heads its object (``prep`` → ``pobj``); UD makes the object the head
  (``obl`` under a verb, adjective or adverb, ``nmod`` under a nominal, ``obl:agent`` for the
  passive ``by``) and the preposition its ``case`` dependent; a preposition over a clause
  (``pcomp``) becomes the clause's ``mark`` (the clause: ``advcl``, or ``acl`` under a
  nominal);
- a copula heads its predicate (``is`` → ``attr``/``acomp``, or a prepositional phrase);
  UD makes the predicate the head and ``be`` its ``cop``, moving every other dependent of
  ``be`` (subject, negation, punctuation…) to the predicate; after an expletive
  (``There is a cat``) ``be`` stays the head and ``attr`` becomes its ``nsubj``;
- conjuncts chain (``a → b → c``); UD attaches every conjunct to the first one, and each
  coordinating conjunction to the conjunct that follows it.

Every other label is renamed by ``CLEARNLP_TO_UD`` (and the infinitival ``to``, ClearNLP
``aux``, becomes UD ``mark``). Heads here are 1-based with 0 = root.
"""

from __future__ import annotations

from collections.abc import Sequence

CLEARNLP_TO_UD_VERSION = "1"
"""Changes whenever the conversion changes (spaCy parser versions include it)."""

CLEARNLP_TO_UD: dict[str, str] = {
    "ROOT": "root",
    "acl": "acl",
    "acomp": "xcomp",  # "seems happy"; a copular acomp becomes the head instead
    "advcl": "advcl",
    "advmod": "advmod",
    "agent": "advmod",  # an agent "by" with no object left
    "amod": "amod",
    "appos": "appos",
    "attr": "xcomp",  # "became a doctor"; a copular attr becomes the head instead
    "aux": "aux",
    "auxpass": "aux:pass",
    "case": "case",
    "cc": "cc",
    "ccomp": "ccomp",
    "compound": "compound",
    "conj": "conj",
    "csubj": "csubj",
    "csubjpass": "csubj:pass",
    "dative": "iobj",  # "gave him a book"; "to him" becomes obl with its case
    "dep": "dep",
    "det": "det",
    "dobj": "obj",
    "expl": "expl",
    "intj": "discourse",
    "mark": "mark",
    "meta": "dep",
    "neg": "advmod",
    "nmod": "nmod",
    "npadvmod": "obl:unmarked",  # nmod:unmarked under a nominal
    "nsubj": "nsubj",
    "nsubjpass": "nsubj:pass",
    "nummod": "nummod",
    "oprd": "xcomp",
    "parataxis": "parataxis",
    "pcomp": "ccomp",  # a pcomp whose head is no preposition
    "pobj": "obl",  # a pobj whose head is no preposition
    "poss": "nmod:poss",
    "preconj": "cc:preconj",
    "predet": "det:predet",
    "prep": "advmod",  # a preposition with no object ("came in")
    "prt": "compound:prt",
    "punct": "punct",
    "quantmod": "advmod",
    "relcl": "acl:relcl",
    "xcomp": "xcomp",
}
"""ClearNLP label -> UD relation, for arcs whose shape stays; labels not listed are kept."""

NOMINAL_UPOS = frozenset({"NOUN", "PROPN", "PRON", "NUM", "SYM"})
"""Heads whose prepositional dependents are ``nmod`` (others get ``obl``)."""

_PREPOSITIONS = frozenset({"prep", "agent", "dative"})
_OBJECTS = ("pobj", "pcomp")
_AUXILIARIES = frozenset({"aux", "auxpass", "cop"})
_COPULA_BLOCKERS = frozenset(
    {"attr", "acomp", "dobj", "ccomp", "xcomp", "oprd", "expl", "csubj", "dative"}
)


def clearnlp_to_ud(
    heads: Sequence[int], deprels: Sequence[str], upos: Sequence[str], lemmas: Sequence[str]
) -> tuple[list[int], list[str]]:
    """Converts one ClearNLP-labelled tree (or forest) to UD shape and relation names.

    Args:
        heads: ``[n]`` 1-based heads, ``0`` for roots.
        deprels: ``[n]`` ClearNLP labels (``ROOT`` for roots).
        upos: ``[n]`` universal POS tags.
        lemmas: ``[n]`` lemmas (``be`` identifies copulas).

    Returns:
        ``(heads, deprels)``: ``[n]`` 1-based UD heads and ``[n]`` UD relations.
    """
    h = [head - 1 for head in heads]  # 0-based, -1 = root
    rel = list(deprels)
    _raise_copular_predicates(h, rel, lemmas)
    _lower_prepositions(h, rel, upos)
    _raise_prepositional_predicates(h, rel, lemmas)
    _attach_coordination(h, rel)
    ud = []
    for i, label in enumerate(rel):
        label = CLEARNLP_TO_UD.get(label, label)
        if label == "obl:unmarked" and h[i] >= 0 and upos[h[i]] in NOMINAL_UPOS:
            label = "nmod:unmarked"
        elif label == "aux" and upos[i] == "PART":
            label = "mark"  # infinitival "to"
        ud.append(label)
    return [head + 1 for head in h], ud


def _children(h: list[int], i: int) -> list[int]:
    return [k for k, head in enumerate(h) if head == i]


def _make_copula(h: list[int], rel: list[str], verb: int, predicate: int) -> None:
    """Makes ``predicate`` the head of ``verb``'s phrase and ``verb`` its ``cop``."""
    for k in _children(h, verb):
        if k != predicate:
            h[k] = predicate
    h[predicate], rel[predicate] = h[verb], rel[verb]
    h[verb], rel[verb] = predicate, "cop"


def _is_main_be(i: int, rel: list[str], lemmas: Sequence[str]) -> bool:
    return lemmas[i].lower() == "be" and rel[i] not in _AUXILIARIES


def _raise_copular_predicates(h: list[int], rel: list[str], lemmas: Sequence[str]) -> None:
    """``be`` + ``attr``/``acomp``: the predicate heads, ``be`` becomes ``cop``."""
    for verb in range(len(h)):
        if not _is_main_be(verb, rel, lemmas):
            continue
        kids = _children(h, verb)
        if any(rel[k] == "expl" for k in kids):
            for k in kids:
                if rel[k] == "attr":
                    rel[k] = "nsubj"
            continue
        predicates = [k for k in kids if rel[k] in ("attr", "acomp")]
        if predicates:
            _make_copula(h, rel, verb, predicates[0])


def _lower_prepositions(h: list[int], rel: list[str], upos: Sequence[str]) -> None:
    """A preposition heading a ``pobj``/``pcomp`` hands its place in the tree to that object.

    A bare preposition beside the object ("because [of] the rain") becomes ``fixed`` to the
    first. Nested prepositions ("from under the table": ``from`` → ``under`` → ``table``) all
    become ``case`` of the innermost object, which takes the outer preposition's place.
    """
    n = len(h)
    kids = [_children(h, i) for i in range(n)]
    for k in range(n):  # "because of": a bare preposition beside a pobj is part of its head
        head = h[k]
        if rel[k] == "pcomp" and upos[k] == "ADP" and not kids[k]:
            if head >= 0 and any(rel[c] == "pobj" for c in kids[head]):
                rel[k] = "fixed"
    objects: dict[int, int] = {}
    for label in _OBJECTS:  # a pobj before a pcomp, the first of each
        for k in range(n):
            head = h[k]
            if (
                rel[k] == label
                and head >= 0
                and head not in objects
                and (rel[head] in _PREPOSITIONS or upos[head] == "ADP")
            ):
                objects[head] = k
    if not objects:
        return

    def phrase_head(x: int) -> int:
        for _ in range(n):
            if x not in objects:
                break
            x = objects[x]
        return x

    old_h, old_rel = list(h), list(rel)
    for k in range(n):
        head = old_h[k]
        if head in objects and objects[head] != k and rel[k] != "fixed":
            h[k] = phrase_head(head)  # other dependents of a preposition move to its phrase
    for prep, obj in objects.items():
        top = phrase_head(obj)
        h[prep] = top
        rel[prep] = "mark" if old_rel[obj] == "pcomp" else "case"
        governor = old_h[prep]
        if objects.get(governor) == prep:
            continue  # an inner preposition: the outer one places the phrase
        governor = phrase_head(governor) if governor in objects else governor
        h[top] = governor
        role = old_rel[prep]
        nominal = governor >= 0 and upos[governor] in NOMINAL_UPOS
        if role not in _PREPOSITIONS:
            rel[top] = role  # e.g. a conjoined preposition: its object is the conjunct
        elif old_rel[obj] == "pcomp":
            rel[top] = "acl" if nominal else "advcl"
        elif role == "agent":
            rel[top] = "obl:agent"
        else:
            rel[top] = "nmod" if nominal else "obl"


def _raise_prepositional_predicates(h: list[int], rel: list[str], lemmas: Sequence[str]) -> None:
    """``be`` + a following prepositional phrase only ("is in Germany"): the phrase heads."""
    for verb in range(len(h)):
        if not _is_main_be(verb, rel, lemmas):
            continue
        kids = _children(h, verb)
        if any(rel[k] in _COPULA_BLOCKERS for k in kids):
            continue
        phrases = [k for k in kids if k > verb and rel[k] == "obl"]
        if phrases:
            _make_copula(h, rel, verb, phrases[0])


def _attach_coordination(h: list[int], rel: list[str]) -> None:
    """Each ``cc`` attaches to the conjunct that follows it; every conjunct to the first."""
    for k in range(len(h)):
        if rel[k] != "cc" or h[k] < 0:
            continue
        following = [c for c in _children(h, h[k]) if rel[c] == "conj" and c > k]
        if following:
            h[k] = following[0]
    for k in range(len(h)):
        if rel[k] != "conj":
            continue
        first, steps = h[k], 0
        while first >= 0 and rel[first] == "conj" and steps < len(h):
            first, steps = h[first], steps + 1
        if first >= 0:
            h[k] = first
