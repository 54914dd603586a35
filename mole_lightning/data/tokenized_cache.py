"""Tokenized splits cached on disk with ``datasets``, keyed explicitly.

The key is a hash of everything the token ids depend on: the rows' source, the tokenizer,
``max_length``, whether offsets are kept and ``TOKENIZED_FORMAT``. A cache without its
``meta.json`` (an interrupted write) or written by another format version is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import datasets

from mole_lightning.data.glue import GlueExample
from mole_lightning.errors import CacheError

TOKENIZED_FORMAT = "1"


def tokenizer_fingerprint(tokenizer) -> str:
    """A string that changes when the tokenizer's vocabulary or class changes."""
    return f"{type(tokenizer).__name__}:{tokenizer.name_or_path}:{len(tokenizer)}"


def cache_key(source: str, tokenizer, max_length: int, with_offsets: bool) -> str:
    """Hash of every input the tokenized split depends on."""
    parts = [
        TOKENIZED_FORMAT,
        source,
        tokenizer_fingerprint(tokenizer),
        str(max_length),
        str(with_offsets),
    ]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def tokenize_examples(
    examples: list[GlueExample], tokenizer, max_length: int, with_offsets: bool
) -> datasets.Dataset:
    """Tokenizes rows into a ``datasets.Dataset`` with ``input_ids``, ``attention_mask``,
    (``token_type_ids``), ``labels``, ``idx`` and, with offsets, ``offset_mapping`` and
    ``sequence_ids`` (``-1`` for special tokens) for word-graph alignment."""
    table = datasets.Dataset.from_dict(
        {
            "text_a": [e.text_a for e in examples],
            "text_b": [e.text_b for e in examples],
            "labels": [e.label for e in examples],
            "idx": list(range(len(examples))),
        }
    )
    is_pair = bool(examples) and examples[0].text_b is not None

    def encode(batch: dict) -> dict:
        args = (batch["text_a"], batch["text_b"]) if is_pair else (batch["text_a"],)
        enc = tokenizer(
            *args,
            truncation=True,
            max_length=max_length,
            return_offsets_mapping=with_offsets,
        )
        if with_offsets:
            enc["sequence_ids"] = [
                [-1 if s is None else s for s in enc.sequence_ids(i)]
                for i in range(len(batch["text_a"]))
            ]
        return enc

    return table.map(
        encode,
        batched=True,
        remove_columns=["text_a", "text_b"],
        desc="tokenizing",
        keep_in_memory=True,
    )


def load_or_build(
    path: Path, source: str, build: Callable[[], datasets.Dataset]
) -> datasets.Dataset:
    """Returns the table cached at ``path``, building and saving it first unless a complete
    cache of the same ``source`` and ``TOKENIZED_FORMAT`` is there.

    Args:
        path: the cache folder (``cache_dir / cache_key(...)``).
        source: identifies the rows (task, split and file fingerprint or hub name).
        build: ``() -> datasets.Dataset``, called only on a cache miss.
    """
    meta_path = path / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") == TOKENIZED_FORMAT and meta.get("source") == source:
                dataset = datasets.load_from_disk(str(path / "data"))
                if len(dataset) == meta["rows"]:
                    return dataset
        except (OSError, ValueError, KeyError, FileNotFoundError):
            pass  # corrupt or partial: rebuilt below
        shutil.rmtree(path, ignore_errors=True)
    dataset = build()
    path.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(path / "data"))
    meta_path.write_text(
        json.dumps({"format": TOKENIZED_FORMAT, "source": source, "rows": len(dataset)})
    )
    return datasets.load_from_disk(str(path / "data"))


def load_or_tokenize(
    cache_dir: Path, source: str, examples_fn, tokenizer, max_length: int, with_offsets: bool
) -> datasets.Dataset:
    """The tokenized GLUE split, from ``cache_dir`` when a complete cache exists.

    Args:
        cache_dir: root of the tokenized caches.
        source: identifies the rows (task, split and file fingerprint or hub name).
        examples_fn: ``() -> list[GlueExample]``, called only on a cache miss.
    """
    return load_or_build(
        cache_dir / cache_key(source, tokenizer, max_length, with_offsets),
        source,
        lambda: tokenize_examples(examples_fn(), tokenizer, max_length, with_offsets),
    )


def load_tokenized(
    cache_dir: Path, source: str, tokenizer, max_length: int, with_offsets: bool
) -> datasets.Dataset:
    """Loads a tokenized split written by ``load_or_tokenize`` (never tokenizes).

    Raises:
        CacheError: the cache is missing (``prepare_data`` did not run) or incomplete.
    """
    path = cache_dir / cache_key(source, tokenizer, max_length, with_offsets)
    if not (path / "meta.json").is_file():
        raise CacheError(f"{path}: tokenized cache missing; call prepare_data() first")
    return datasets.load_from_disk(str(path / "data"))
