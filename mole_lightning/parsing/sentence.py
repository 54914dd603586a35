"""The one word-level form every parser backend produces: a UD dependency parse."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mole_lightning.errors import MoleError


class ParseError(MoleError, RuntimeError):
    """A parser could not parse one of its input texts (the message names its index).

    Attributes:
        index: position of the failing text in the parsed list, when known.
    """

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class ParsedSentence:
    """The dependency parse of one input text, at word level, in Universal Dependencies form.

    A text that holds several sentences is still ONE ``ParsedSentence``: the words of all its
    sentences follow each other, and the root of every sentence has head ``0`` (relation
    ``root``), so the tree is a forest with one tree per sentence.

    Attributes:
        text: the parsed text, unchanged.
        words: ``[n]`` word forms (whitespace never forms a word).
        spans: ``[n]`` character ``(start, end)`` of each word in ``text``; words of one
            multi-word token (Stanza's "did" + "n't") may share their token's span.
        heads: ``[n]`` 1-based index of each word's head, ``0`` for a root.
        deprels: ``[n]`` UD relation of each word to its head (``root`` for a root).
        upos: ``[n]`` universal part-of-speech tags.
        lemmas: ``[n]`` lemmas.
    """

    text: str
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    heads: tuple[int, ...]
    deprels: tuple[str, ...]
    upos: tuple[str, ...]
    lemmas: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.words)
        for field in ("spans", "heads", "deprels", "upos", "lemmas"):
            if len(getattr(self, field)) != n:
                raise ValueError(
                    f"ParsedSentence of {self.text[:60]!r}: {n} words but "
                    f"{len(getattr(self, field))} {field}"
                )
        for i, head in enumerate(self.heads):
            if not 0 <= head <= n or head == i + 1:
                raise ValueError(
                    f"ParsedSentence of {self.text[:60]!r}: word {i} ({self.words[i]!r}) has "
                    f"head {head}, outside 0..{n} or itself"
                )

    def __len__(self) -> int:
        return len(self.words)

    @property
    def num_roots(self) -> int:
        """Number of words with head ``0`` (one per sentence of the text)."""
        return sum(1 for head in self.heads if head == 0)

    @classmethod
    def build(
        cls,
        text: str,
        words: Sequence[str],
        spans: Sequence[tuple[int, int]],
        heads: Sequence[int],
        deprels: Sequence[str],
        upos: Sequence[str],
        lemmas: Sequence[str],
    ) -> ParsedSentence:
        """Builds a sentence from any sequences (stored as tuples)."""
        return cls(
            text=text,
            words=tuple(words),
            spans=tuple((int(s), int(e)) for s, e in spans),
            heads=tuple(int(h) for h in heads),
            deprels=tuple(deprels),
            upos=tuple(upos),
            lemmas=tuple(lemmas),
        )

    @classmethod
    def empty(cls, text: str) -> ParsedSentence:
        """The parse of a text with no words (empty or whitespace only)."""
        return cls(text=text, words=(), spans=(), heads=(), deprels=(), upos=(), lemmas=())


def drop_words(heads: Sequence[int], keep: Sequence[bool]) -> list[int]:
    """Removes words from a tree, re-attaching each orphan to its nearest kept ancestor.

    Args:
        heads: ``[n]`` 1-based heads (``0`` = root).
        keep: ``[n]`` which words stay.

    Returns:
        ``[m]`` 1-based heads of the ``m`` kept words, renumbered; a word whose every
        ancestor is dropped becomes a root (``0``).
    """
    new_index = [0] * len(heads)
    m = 0
    for i, kept in enumerate(keep):
        if kept:
            m += 1
            new_index[i] = m
    out = []
    for i, kept in enumerate(keep):
        if not kept:
            continue
        head = heads[i]
        steps = 0
        while head != 0 and not keep[head - 1]:
            head = heads[head - 1]
            steps += 1
            if steps > len(heads):
                raise ValueError(f"heads {list(heads)} contain a cycle")
        out.append(new_index[head - 1] if head else 0)
    return out
