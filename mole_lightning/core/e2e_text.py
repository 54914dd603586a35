"""E2E text: the meaning representation (MR) linearised as a prompt, the word-tokenised
text of the LoRA / MoLEx GPT-2 code, the token layout of each format and the batch of
prompts for generation. The data module encodes training pairs with it and the
generation module encodes new MRs with it, so it sits at the bottom of the package.

The ``authors`` format is E2E text as the LoRA / MoLEx GPT-2 code sees it
(microsoft/LoRA, ``examples/NLG``).

Their pipeline (read from the public code):

* ``data/e2e/{train,valid,test}.txt`` (Li & Liang's prefix-tuning release) hold one
  ``context||completion`` line per (MR, reference) pair, already word-tokenised: e.g.
  ``name : Alimentum | area : city centre | family friendly : no||There is a place in the
  city centre , Alimentum , that is not family - friendly .`` (devset row 1).
* ``src/format_converting_e2e.py`` splits each stripped line at ``||``: ``context`` is the
  part before (the ``+ '||'`` is commented out), ``completion`` the part after. It does no
  tokenising of its own.
* ``src/gpt2_encode.py --add_bos --add_eos`` BPE-encodes ``context`` then appends 50256,
  and encodes ``' ' + completion`` then appends 50256.
* ``src/gpt2_decode.py`` writes the references as they are in the file (word-tokenised)
  and the predictions as decoded (cut at the first ``<|endoftext|>`` or blank line,
  stripped), with no further tokenising for E2E; ``measure_scores.py`` compares those.

No script that builds the word-tokenised files is public, so ``word_tokenize`` states the
rule their text follows (checked on the released ``valid.txt`` against ``devset.csv``):
every character that is neither a letter, a digit nor whitespace is its own token, except
an apostrophe between a word character and a letter or digit, which starts a token with
what follows (``aren't`` -> ``aren 't``, ``it's`` -> ``it 's``); letters and digits
that touch stay one token (``5out``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

PROMPT_KEYS = {
    "name": "name",
    "eatType": "Type",
    "food": "food",
    "priceRange": "price",
    "customer rating": "customer rating",
    "area": "area",
    "familyFriendly": "family friendly",
    "near": "near",
}
"""MR attribute -> its name in the linearised prompt of Li & Liang (prefix-tuning), which
the LoRA and MoLEx E2E experiments use."""
PROMPT_END = " ||"
"""Separator between the linearised MR and the reference."""

_ATTRIBUTE = re.compile(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*(?:,|$)")


def parse_mr(mr: str) -> list[tuple[str, str]]:
    """``"name[The Vaults], eatType[pub]"`` -> ``[("name", "The Vaults"), ("eatType", "pub")]``.

    Raises:
        ValueError: ``mr`` is not a comma-separated list of ``attribute[value]``.
    """
    attributes, position = [], 0
    while position < len(mr):
        match = _ATTRIBUTE.match(mr, position)
        if match is None:
            raise ValueError(
                f"not an 'attribute[value], ...' meaning representation at {mr[position:]!r:.60}"
            )
        attributes.append((match.group(1), match.group(2).strip()))
        position = match.end()
    if not attributes:
        raise ValueError("empty meaning representation")
    return attributes


def format_prompt(mr: str) -> str:
    """Linearises an MR as in the LoRA / MoLEx E2E data, ending with ``PROMPT_END``:
    ``"name[The Vaults], eatType[pub]"`` -> ``"name : The Vaults | Type : pub ||"``.

    Values are kept as written in the MR (the LoRA data's values are also
    word-tokenised, e.g. ``£ 30``; tokenising is left to the BPE). Unknown attributes
    keep their own name.
    """
    fields = [f"{PROMPT_KEYS.get(key, key)} : {value}" for key, value in parse_mr(mr)]
    return " | ".join(fields) + PROMPT_END


def prompt_ids(tokenizer, mr: str, ref: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids of the default ``prompt`` format: ``BPE(format_prompt(mr))`` and
    ``BPE(" " + ref) + [eos]`` (``[]`` when ``ref`` is ``None``, for decoding)."""
    prompt = tokenizer(format_prompt(mr), add_special_tokens=False)["input_ids"]
    if ref is None:
        return prompt, []
    return prompt, tokenizer(" " + ref, add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]


_TOKEN = re.compile(r"(?<=[^\W_])'[^\W_]+|[^\W_]+|\S")
"""A clitic (``'t`` after a word character), a run of letters / digits, or any other
single non-space character."""


def word_tokenize(text: str) -> str:
    """``"not family-friendly, it's £20-25."`` -> ``"not family - friendly , it 's £ 20 - 25 ."``
    (the rule in the module docstring; runs of whitespace become one space)."""
    return " ".join(_TOKEN.findall(text))


def authors_context(mr: str) -> str:
    """The MR as the authors' context: ``"name[The Vaults], priceRange[more than £30]"`` ->
    ``"name : The Vaults | price : more than £ 30"`` (prefix-tuning's attribute names,
    values word-tokenised, no ``||``)."""
    return " | ".join(
        f"{PROMPT_KEYS.get(key, key)} : {word_tokenize(value)}" for key, value in parse_mr(mr)
    )


def authors_ids(tokenizer, mr: str, ref: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids as ``gpt2_encode.py --add_bos --add_eos`` writes them.

    Args:
        tokenizer: the GPT-2 tokenizer (its ``eos_token_id``, 50256, ends both parts).
        mr: the meaning representation.
        ref: the reference (``None``: the context only, for decoding).

    Returns:
        ``(context, completion)``: ``BPE(authors_context(mr)) + [eos]`` and
        ``BPE(" " + word_tokenize(ref)) + [eos]`` (``[]`` when ``ref`` is ``None``).
    """
    eos = tokenizer.eos_token_id
    context = tokenizer(authors_context(mr), add_special_tokens=False)["input_ids"] + [eos]
    if ref is None:
        return context, []
    completion = tokenizer(" " + word_tokenize(ref), add_special_tokens=False)["input_ids"]
    return context, completion + [eos]


IGNORE_INDEX = -100
"""Label of the tokens the LM loss skips (prompt and padding)."""
E2E_FORMATS: dict[str, tuple[Callable, Callable[[str], str]]] = {
    "prompt": (prompt_ids, str),
    "authors": (authors_ids, word_tokenize),
}
"""``data.e2e_format`` -> (``ids(tokenizer, mr, ref | None) -> (prompt ids, target ids)``,
the reference text scored against predictions)."""


def collate_prompts(rows: list[dict], pad_token_id: int) -> dict:
    """Left-pads prompts into a batch for generation (continuations start right after
    every row's last prompt token).

    Returns:
        ``input_ids`` and ``attention_mask`` ``[batch, prompt]``, ``idx`` ``[batch]``, and
        the lists ``mr`` and ``references`` (one list of reference strings per row).
    """
    seq = max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((len(rows), seq), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), seq), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, seq - n :] = torch.tensor(row["input_ids"])
        attention_mask[i, seq - n :] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "idx": torch.tensor([r["idx"] for r in rows]),
        "mr": [r["mr"] for r in rows],
        "references": [list(r["references"]) for r in rows],
    }
