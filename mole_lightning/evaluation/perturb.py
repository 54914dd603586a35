"""Seeded, reproducible text perturbations: character typos, word dropout, adjacent swaps.

Every perturbation takes a rate ``p`` in [0, 1] and a ``random.Random``; ``perturb_examples``
gives each (example, text column) its own generator seeded by ``(seed, kind, p, row,
column)``, so a perturbed set depends only on those, never on the order it is built in.
``p = 0`` returns every text unchanged, and a text a perturbation would empty (typos
deleting every letter of a one-letter text) stays as it was.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import replace

from mole_lightning.data.glue import GlueExample
from mole_lightning.errors import ConfigError

TYPO_OPERATIONS = ("substitute", "delete", "insert", "transpose")


def char_typos(text: str, p: float, rng: random.Random) -> str:
    """Each letter, with probability ``p``, gets one typo: substituted by a random letter,
    deleted, followed by an inserted random letter, or transposed with the next character."""
    chars = list(text)
    out: list[str] = []
    i = 0
    while i < len(chars):
        char = chars[i]
        if not char.isalpha() or rng.random() >= p:
            out.append(char)
            i += 1
            continue
        operation = rng.choice(TYPO_OPERATIONS)
        if operation == "substitute":
            out.append(rng.choice(string.ascii_lowercase))
        elif operation == "insert":
            out += [char, rng.choice(string.ascii_lowercase)]
        elif operation == "transpose" and i + 1 < len(chars):
            out += [chars[i + 1], char]
            i += 1
        elif operation == "transpose":
            out.append(char)
        i += 1
    return "".join(out)


def word_dropout(text: str, p: float, rng: random.Random) -> str:
    """Drops each whitespace-separated word with probability ``p`` (at least one word stays)."""
    words = text.split()
    kept = [w for w in words if rng.random() >= p]
    if words and not kept:
        kept = [words[rng.randrange(len(words))]]
    return " ".join(kept)


def adjacent_swaps(text: str, p: float, rng: random.Random) -> str:
    """Left to right, swaps each pair of adjacent words with probability ``p`` (a swapped
    word is not swapped again)."""
    words = text.split()
    i = 0
    while i + 1 < len(words):
        if rng.random() < p:
            words[i], words[i + 1] = words[i + 1], words[i]
            i += 2
        else:
            i += 1
    return " ".join(words)


PERTURBATIONS: dict[str, Callable[[str, float, random.Random], str]] = {
    "typo": char_typos,
    "dropout": word_dropout,
    "swap": adjacent_swaps,
}


def perturb_examples(
    examples: list[GlueExample], kind: str, p: float, seed: int
) -> list[GlueExample]:
    """A perturbed copy of ``examples`` (labels unchanged; both sentences of a pair).

    Raises:
        ConfigError: unknown ``kind`` or a rate outside [0, 1].
    """
    if kind not in PERTURBATIONS:
        raise ConfigError(f"unknown perturbation {kind!r}; valid: {', '.join(PERTURBATIONS)}")
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"perturbation rate {p} outside [0, 1]")
    if p == 0:
        return list(examples)
    apply = PERTURBATIONS[kind]

    def perturbed(text: str | None, row: int, column: str) -> str | None:
        if text is None:
            return None
        out = apply(text, p, random.Random(f"{seed}:{kind}:{p}:{row}:{column}"))
        return out if out.strip() else text  # a text typos emptied stays as it was

    return [
        replace(e, text_a=perturbed(e.text_a, i, "a"), text_b=perturbed(e.text_b, i, "b"))
        for i, e in enumerate(examples)
    ]
