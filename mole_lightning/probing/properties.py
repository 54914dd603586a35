"""Probing sentences and their properties, from gold UD (CoNLL-U) parses.

Properties (a sentence without one, e.g. no ``nsubj`` under its root, is left out of
that property's probe):

- ``length``: number of words, binned by ``LENGTH_EDGES``;
- ``depth``: depth of the dependency tree (a lone root has depth 1), binned by ``DEPTH_EDGES``;
- ``tense``: UD ``Tense`` of the root word (of its copula or auxiliary when the root
  is a non-verbal predicate);
- ``subj_number``: UD ``Number`` of the root's ``nsubj`` (or ``nsubj:pass``);
- ``obj_number``: UD ``Number`` of the root's ``obj``;
- ``bigram_shift``: whether two adjacent words were swapped. Sentences are split in two
  halves by a seeded permutation; the second half is replaced by its swapped copies
  (``bigram_shift``: exactly one adjacent pair, of two different words, swapped);
  sentences with no such pair (one word) are left out.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

from mole_lightning.errors import DataFileError

LENGTH_EDGES = (8, 12, 16, 20, 25, 30)
DEPTH_EDGES = (3, 4, 5, 6, 7, 8)
PROPERTIES = ("length", "depth", "tense", "subj_number", "obj_number", "bigram_shift")


@dataclass(frozen=True)
class ProbeSentence:
    """One sentence: ``words`` ``[n]``, 1-based ``heads`` ``[n]`` (0 = root), UD ``deprels``
    ``[n]``, morphological ``feats`` ``[n]`` (``{"Tense": "Past", ...}``), ``upos`` ``[n]``
    and ``lemmas`` ``[n]`` (the semantic word graph reads them; empty: unknown)."""

    words: tuple[str, ...]
    heads: tuple[int, ...]
    deprels: tuple[str, ...]
    feats: tuple[dict, ...] = field(default=())
    upos: tuple[str, ...] = field(default=())
    lemmas: tuple[str, ...] = field(default=())


def read_conllu(path: str | Path) -> list[ProbeSentence]:
    """The sentences of a CoNLL-U file (multi-word token lines and empty nodes skipped).

    Raises:
        DataFileError: the file is missing or a line is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(
            f"{path}: CoNLL-U file not found; the gold UD dev set ships as "
            "../shared/data/ud/en_ewt-ud-dev.conllu (set ud_file=...)"
        )
    sentences, rows = [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            if rows:
                sentences.append(_sentence(rows))
                rows = []
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise DataFileError(f"{path}:{line_no}: {len(cols)} columns, CoNLL-U has 10")
        if "-" in cols[0] or "." in cols[0]:
            continue
        rows.append(cols)
    if rows:
        sentences.append(_sentence(rows))
    return sentences


def _sentence(rows: list[list[str]]) -> ProbeSentence:
    feats = tuple(
        dict(kv.split("=", 1) for kv in r[5].split("|")) if r[5] != "_" else {} for r in rows
    )
    return ProbeSentence(
        words=tuple(r[1] for r in rows),
        heads=tuple(int(r[6]) for r in rows),
        deprels=tuple(r[7] if r[7] != "_" else "dep" for r in rows),
        feats=feats,
        upos=tuple(r[3] if r[3] != "_" else "X" for r in rows),
        lemmas=tuple(r[2] if r[2] != "_" else r[1] for r in rows),
    )


def bin_label(value: int, edges: tuple[int, ...]) -> str:
    """The bin of ``value``: ``<=e0``, ``e0+1-e1`` (or ``e1`` when that is one value), ...,
    ``>eN``."""
    i = bisect_right(edges, value - 1)
    if i == 0:
        return f"<={edges[0]}"
    if i == len(edges):
        return f">{edges[-1]}"
    low, high = edges[i - 1] + 1, edges[i]
    return str(high) if low == high else f"{low}-{high}"


def tree_depth(heads: tuple[int, ...]) -> int:
    """Number of words on the longest root-to-leaf path."""
    depth = {}

    def of(i: int) -> int:  # i: 1-based word index
        if i not in depth:
            depth[i] = 1 if heads[i - 1] == 0 else 1 + of(heads[i - 1])
        return depth[i]

    return max(of(i) for i in range(1, len(heads) + 1))


def _root_dependent_feature(
    s: ProbeSentence, relations: tuple[str, ...], feature: str
) -> str | None:
    root = next((i + 1 for i, h in enumerate(s.heads) if h == 0), None)
    for i, (head, rel) in enumerate(zip(s.heads, s.deprels, strict=True)):
        if head == root and rel in relations:
            return s.feats[i].get(feature)
    return None


def root_tense(s: ProbeSentence) -> str | None:
    """UD ``Tense`` of the root word or, when the root is a non-verbal predicate ("it was
    a charming movie": root ``movie``), of its ``cop`` / ``aux`` dependent."""
    root = next(i for i, h in enumerate(s.heads) if h == 0)
    if "Tense" in s.feats[root]:
        return s.feats[root]["Tense"]
    return _root_dependent_feature(s, ("cop", "aux", "aux:pass"), "Tense")


def bigram_shift(words: tuple[str, ...], rng: random.Random) -> tuple[tuple[str, ...], int] | None:
    """``(words with the pair (i, i+1) swapped, i)`` for a random ``i`` whose two words
    differ, or ``None`` when no such pair exists."""
    positions = [i for i in range(len(words) - 1) if words[i] != words[i + 1]]
    if not positions:
        return None
    i = rng.choice(positions)
    swapped = list(words)
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    return tuple(swapped), i


def swap_adjacent(s: ProbeSentence, i: int) -> ProbeSentence:
    """``s`` with words ``i`` and ``i + 1`` (0-based) exchanged, each keeping its own head,
    relation, features, tag and lemma: the parse follows the words to their new places."""
    order = list(range(len(s.words)))
    order[i], order[i + 1] = i + 1, i  # new position -> old position
    new_position = {old + 1: new + 1 for new, old in enumerate(order)}
    new_position[0] = 0

    def permuted(values: tuple) -> tuple:
        return tuple(values[old] for old in order) if values else values

    return ProbeSentence(
        words=permuted(s.words),
        heads=tuple(new_position[s.heads[old]] for old in order),
        deprels=permuted(s.deprels),
        feats=permuted(s.feats),
        upos=permuted(s.upos),
        lemmas=permuted(s.lemmas),
    )


@dataclass
class ProbeData:
    """The probing inputs.

    Attributes:
        sentences: ``[N]`` word tuples whose representations are probed (the second half
            of the bigram-shift permutation appears swapped).
        labels: property -> ``[N]`` label strings (``None``: the sentence lacks it).
        parses: ``[N]`` the parse of each probed sentence (a swapped copy: its original's
            parse with the two words exchanged, ``swap_adjacent``); graph experts read
            word graphs built from them.
    """

    sentences: list[tuple[str, ...]]
    labels: dict[str, list[str | None]]
    parses: list[ProbeSentence] = field(default_factory=list)


def build_probe_data(sentences: list[ProbeSentence], seed: int) -> ProbeData:
    """Every property's labels; the bigram-shift copies are drawn with ``seed``.

    The syntactic properties label the original sentences; the swapped copies are probed
    only for ``bigram_shift`` (their own labels for the other properties are ``None``), so
    each sentence appears once per property.
    """
    rng = random.Random(seed)
    order = list(range(len(sentences)))
    rng.shuffle(order)
    swap = set(order[len(order) // 2 :])
    originals = [s.words for s in sentences]
    labels: dict[str, list[str | None]] = {p: [] for p in PROPERTIES}
    shifted = []
    for i, s in enumerate(sentences):
        labels["length"].append(bin_label(len(s.words), LENGTH_EDGES))
        labels["depth"].append(bin_label(tree_depth(s.heads), DEPTH_EDGES))
        labels["tense"].append(root_tense(s))
        labels["subj_number"].append(_root_dependent_feature(s, ("nsubj", "nsubj:pass"), "Number"))
        labels["obj_number"].append(_root_dependent_feature(s, ("obj",), "Number"))
        copy = bigram_shift(s.words, rng) if i in swap else None
        shifted.append(swap_adjacent(s, copy[1]) if copy else None)
        swappable = len(set(s.words)) > 1
        labels["bigram_shift"].append("original" if swappable and i not in swap else None)
    # swapped copies follow the originals; the originals in the swap half are not
    # bigram-shift examples (each sentence appears once per property)
    extra = [s for s in shifted if s is not None]
    for prop in PROPERTIES:
        labels[prop] += ["swapped" if prop == "bigram_shift" else None] * len(extra)
    return ProbeData(
        sentences=originals + [s.words for s in extra],
        labels=labels,
        parses=list(sentences) + extra,
    )


def spacy_probe_sentences(
    texts: list[str], model: str, batch_size: int = 256
) -> list[ProbeSentence]:
    """Silver sentences: ``texts`` parsed by a spaCy pipeline, converted to UD relations
    (as ``parser=spacy`` does) with spaCy's morphological features."""
    import spacy

    from mole_lightning.parsing.spacy_backend import spacy_doc_to_parsed

    nlp = spacy.load(model, exclude=["ner"])
    sentences = []
    for doc in nlp.pipe(texts, batch_size=batch_size):
        parsed = spacy_doc_to_parsed(doc)
        feats = tuple(t.morph.to_dict() for t in doc if not t.is_space)
        sentences.append(
            ProbeSentence(
                parsed.words, parsed.heads, parsed.deprels, feats, parsed.upos, parsed.lemmas
            )
        )
    return sentences
