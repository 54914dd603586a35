"""E2E text as the LoRA / MoLEx GPT-2 code sees it (microsoft/LoRA, ``examples/NLG``).

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

from mole_lightning.data.e2e import PROMPT_KEYS, parse_mr

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
