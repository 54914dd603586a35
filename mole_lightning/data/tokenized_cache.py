"""Tokenized splits cached on disk with ``datasets``, keyed explicitly.

The key is a hash of everything the token ids depend on: the rows' source (for a local
file, a hash of its content: ``file_fingerprint``), the tokenizer, ``max_length``, whether
offsets are kept and ``TOKENIZED_FORMAT``. Each cache folder holds ``data/`` (the
``datasets`` table) and ``meta.json`` (format, source, rows, a checksum of the files in
``data/``). A cache whose meta or checksum does not match is rebuilt by
``load_or_build`` and refused by ``load_tokenized``.

Several processes may build the same cache at once (runs started together on an empty
cache): the build runs under a file lock (``<key>.lock``), so one process builds and the
others wait and load its result, and it is written to a temporary folder renamed into
place, so a file another process has memory-mapped is never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import datasets

from mole_lightning.data.glue import GlueExample
from mole_lightning.errors import CacheError
from mole_lightning.utils.cache_lock import cache_lock

TOKENIZED_FORMAT = "2"


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


def _hash_file(path: Path, digest) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)


def file_fingerprint(path: Path) -> str:
    """A hash of the file's content (``missing`` when there is no file: reading it then
    fails with the file's name)."""
    if not path.is_file():
        return "missing"
    digest = hashlib.blake2b(digest_size=16)
    _hash_file(path, digest)
    return digest.hexdigest()


def data_checksum(folder: Path) -> str:
    """A hash of the names and bytes of every file under ``folder`` (the saved table)."""
    digest = hashlib.blake2b(digest_size=16)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(folder)}\x00{file.stat().st_size}\x00".encode())
        _hash_file(file, digest)
    return digest.hexdigest()


def load_verified(path: Path, source: str) -> datasets.Dataset | None:
    """The table cached at ``path`` when its meta (format, source, rows) and the checksum
    of its files match, else ``None``."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if (
            meta.get("format") != TOKENIZED_FORMAT
            or meta.get("source") != source
            or meta.get("checksum") != data_checksum(path / "data")
        ):
            return None
        dataset = datasets.load_from_disk(str(path / "data"))
        return dataset if len(dataset) == meta["rows"] else None
    except (OSError, ValueError, KeyError):
        return None


def write_cache(path: Path, source: str, dataset: datasets.Dataset) -> None:
    """Saves ``dataset`` with its meta into a temporary folder, then renames it to
    ``path`` (an older folder there is renamed aside and deleted: processes that have it
    memory-mapped keep reading it)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp / "data"))
    meta = {
        "format": TOKENIZED_FORMAT,
        "source": source,
        "rows": len(dataset),
        "checksum": data_checksum(tmp / "data"),
    }
    (tmp / "meta.json").write_text(json.dumps(meta))
    if path.exists():
        old = path.with_name(f"{path.name}.old-{os.getpid()}")
        path.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    tmp.rename(path)


def load_or_build(
    path: Path, source: str, build: Callable[[], datasets.Dataset]
) -> datasets.Dataset:
    """Returns the table cached at ``path``, building and saving it first unless a
    complete, verified cache of the same ``source`` and ``TOKENIZED_FORMAT`` is there.

    Holds ``<path>.lock`` while checking and building: a concurrent caller waits, then
    loads the table this one wrote. In a read-only cache folder (no lock file can be
    made) a complete cache is loaded without the lock.

    Args:
        path: the cache folder (``cache_dir / cache_key(...)``).
        source: identifies the rows (task, split and file content hash or hub name).
        build: ``() -> datasets.Dataset``, called only on a cache miss.

    Raises:
        CacheError: a cache miss in a folder that cannot be written (read-only).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(Path(f"{path}.lock")) as unwritable:
        dataset = load_verified(path, source)
        if dataset is None and unwritable is not None:
            raise CacheError(
                f"{path}: no complete tokenized cache, and {path.parent} is not writable "
                f"({unwritable.strerror or unwritable}); set paths.cache_dir to a writable folder"
            )
        if dataset is None:
            write_cache(path, source, build())
            dataset = load_verified(path, source)
        if dataset is None:
            raise CacheError(f"{path}: the tokenized cache just written does not verify")
        return dataset


def load_or_tokenize(
    cache_dir: Path, source: str, examples_fn, tokenizer, max_length: int, with_offsets: bool
) -> datasets.Dataset:
    """The tokenized GLUE split, from ``cache_dir`` when a complete cache exists.

    Args:
        cache_dir: root of the tokenized caches.
        source: identifies the rows (task, split and file content hash or hub name).
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
        CacheError: the cache is missing (``prepare_data`` did not run), incomplete, or
            fails its checksum.
    """
    path = cache_dir / cache_key(source, tokenizer, max_length, with_offsets)
    dataset = load_verified(path, source)
    if dataset is None:
        raise CacheError(
            f"{path}: tokenized cache missing, stale or corrupt (checksum); "
            "call prepare_data() to rebuild it"
        )
    return dataset
