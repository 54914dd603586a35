"""The on-disk graph cache: parse once in ``prepare``, reload fast in ``load``.

One ``.npz`` file per (dataset key, parser, parser version + graph builder version) under
``cache_dir``, holding flat arrays for the distinct texts of the key:

- ``word_offsets`` ``[U + 1]`` int64 and ``spans`` ``[W, 2]`` int32: the word spans of
  distinct text ``u`` are ``spans[word_offsets[u]:word_offsets[u + 1]]``;
- per graph kind ``k`` (every kind of ``GRAPH_KINDS``, whichever the store loads):
  ``k.edge_offsets`` ``[U + 1]`` int64, ``k.edge_index`` ``[2, E]`` int32 (local word
  indices), ``k.edge_type`` ``[E]`` int8 and ``k.edge_label`` ``[E]`` int16 (label ids,
  numbered per text);
- ``text_order`` ``[N]`` int64: the distinct text of each input text;
- ``meta``: UTF-8 JSON (format version, key, parser name and version, builder version,
  counts, a fingerprint of the texts, a checksum of every array).

A file is used only when all of these match; anything else (another version, a changed
text list, a truncated or corrupt file) makes ``prepare`` rebuild it and ``load`` refuse it.
Files are written to a temporary name and renamed, so a crash never leaves half a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mole_lightning.errors import CacheError
from mole_lightning.graphs.builders import GRAPH_BUILDER_VERSION, GRAPH_KINDS, check_kinds
from mole_lightning.graphs.collate import collate_word_graphs
from mole_lightning.graphs.sentence_graphs import (
    INDEX_DTYPE,
    LABEL_DTYPE,
    TYPE_DTYPE,
    SentenceGraphs,
    compact,
    label_ids,
)
from mole_lightning.parsing.base import Parser, check_texts
from mole_lightning.parsing.factory import build_parser, parser_config, parser_version
from mole_lightning.parsing.sentence import ParseError
from mole_lightning.utils.cache_lock import cache_lock

__all__ = [
    "FORMAT_VERSION",
    "GraphCacheError",
    "GraphStore",
    "SentenceGraphs",
    "collate_word_graphs",
]

FORMAT_VERSION = 2
logger = logging.getLogger(__name__)
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class GraphCacheError(CacheError):
    """A graph cache file is missing, stale or corrupt (and ``load`` never parses)."""


def texts_fingerprint(texts: Sequence[str]) -> str:
    """A hash of the ordered text list: any changed, added or removed text changes it."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(len(texts)).encode())
    for text in texts:
        digest.update(b"\x00")
        digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


class GraphStore:
    """Parses texts into word graphs once and caches them per dataset key.

    Args:
        parser_cfg: the ``parser`` config node (``name`` + backend options).
        cache_dir: folder of the cache files (created on demand).
        kinds: graph kinds ``load`` returns (every kind is cached, so any later choice of
            kinds reuses the same file).
        chunk_size: distinct texts per ``Parser.parse`` call (the progress bar's step; the
            parser batches inside it, with ``n_process`` workers for spaCy).
        show_progress: show a tqdm bar while parsing.
        parser: an already loaded parser to use instead of building the one ``parser_cfg``
            names (scripts that time or reuse it); its ``name`` and ``version`` key the cache.
    """

    def __init__(
        self,
        parser_cfg: Mapping | Any,
        cache_dir: str | os.PathLike,
        kinds: Sequence[str],
        chunk_size: int = 4096,
        show_progress: bool = True,
        parser: Parser | None = None,
    ):
        self.parser_cfg = parser_cfg
        self.parser_name = parser.name if parser is not None else parser_config(parser_cfg)[0]
        self.cache_dir = Path(cache_dir)
        self.kinds = check_kinds(kinds)
        self.chunk_size = chunk_size
        self.show_progress = show_progress
        self._parser = parser

    def path(self, key: str, version: str | None = None) -> Path:
        """The cache file of ``key`` for the parser version ``version`` (default: the
        installed one)."""
        if not _KEY.match(key):
            raise ValueError(f"graph cache key {key!r}: use letters, digits, '_', '.', '-'")
        version = self._installed_version() if version is None else version
        tag = f"{version}|{GRAPH_BUILDER_VERSION}|{FORMAT_VERSION}"
        digest = hashlib.sha1(tag.encode()).hexdigest()[:12]
        return self.cache_dir / f"{key}.{self.parser_name}.{digest}.npz"

    def prepare(self, key: str, texts: Sequence[str]) -> bool:
        """Parses ``texts`` and writes the cache of ``key`` unless a valid one exists.

        Runs under the file lock ``<cache_dir>/.<key>.<parser>.lock``: processes preparing
        the same key at once parse it once (the others wait, then find it valid). In a
        read-only cache folder a valid cache is used without the lock.

        Returns:
            ``True`` when it parsed and wrote the cache, ``False`` when the cache was valid.

        Raises:
            GraphCacheError: no valid cache, and the cache folder cannot be written.
        """
        texts = list(texts)
        check_texts(texts, f"graph store {key!r}")
        fingerprint = texts_fingerprint(texts)
        self.path(key, "")  # refuses a key that is not a file name
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with cache_lock(self.cache_dir / f".{key}.{self.parser_name}.lock") as unwritable:
            try:
                version = self._installed_version()
            except FileNotFoundError:
                version = None  # the model is not there yet (Stanza may download it)
            if version is not None and self._valid(key, version, fingerprint):
                return False
            if unwritable is not None:
                raise GraphCacheError(
                    f"{self.cache_dir}: no valid graph cache of {key!r}, and the folder is not "
                    f"writable ({unwritable.strerror or unwritable}); set paths.cache_dir to a "
                    "writable folder"
                )
            return self._parse_and_write(key, texts, fingerprint, version)

    def _parse_and_write(
        self, key: str, texts: list[str], fingerprint: str, version: str | None
    ) -> bool:
        """``prepare`` under the lock, once no valid cache of the installed ``version``
        was found: parses (unless the loaded parser's own version has a valid one)."""
        parser = self._get_parser()
        if parser.version != version and self._valid(key, parser.version, fingerprint):
            return False
        path = self.path(key, parser.version)
        arrays = self._build(key, texts, parser)
        meta = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "parser": parser.name,
            "parser_version": parser.version,
            "builder_version": GRAPH_BUILDER_VERSION,
            "kinds": list(GRAPH_KINDS),
            "num_texts": len(texts),
            "num_distinct_texts": int(arrays["word_offsets"].shape[0] - 1),
            "num_words": int(arrays["spans"].shape[0]),
            "num_edges": {k: int(arrays[f"{k}.edge_type"].shape[0]) for k in GRAPH_KINDS},
            "texts_fingerprint": fingerprint,
            "checksum": _checksum(arrays),
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def load(self, key: str, texts: Sequence[str]) -> list[SentenceGraphs]:
        """The graphs of ``texts`` (one per text, in order) from the cache; never parses.

        Raises:
            GraphCacheError: the cache is missing, stale (other texts or versions) or
                corrupt; run ``prepare`` (rank 0, ``prepare_data``) first.
        """
        texts = list(texts)
        check_texts(texts, f"graph store {key!r}")
        version = self._installed_version()
        try:
            arrays, _ = self._read(key, version, texts_fingerprint(texts))
        except GraphCacheError as error:
            raise GraphCacheError(
                f"{error}; run GraphStore.prepare({key!r}, texts) first"
            ) from error
        return self._unpack(arrays)

    def _installed_version(self) -> str:
        """The parser's version, read without loading a model unless one is loaded."""
        if self._parser is not None:
            return self._parser.version
        return parser_version(self.parser_cfg)

    def _get_parser(self) -> Parser:
        if self._parser is None:
            self._parser = build_parser(self.parser_cfg)
        return self._parser

    def _valid(self, key: str, version: str, fingerprint: str) -> bool:
        if not self.path(key, version).exists():
            return False
        try:
            self._read(key, version, fingerprint)
        except GraphCacheError as error:
            logger.warning("rebuilding graph cache: %s", error)
            return False
        return True

    def _read(self, key: str, version: str, fingerprint: str) -> tuple[dict[str, np.ndarray], dict]:
        """Reads and checks a cache file; raises ``GraphCacheError`` saying what is wrong."""
        path = self.path(key, version)
        if not path.is_file():
            raise GraphCacheError(f"no graph cache {path}")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            meta = json.loads(arrays.pop("meta").tobytes().decode())
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise GraphCacheError(f"graph cache {path} is unreadable ({error})") from error
        expected = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "parser": self.parser_name,
            "parser_version": version,
            "builder_version": GRAPH_BUILDER_VERSION,
            "kinds": list(GRAPH_KINDS),
        }
        for field, value in expected.items():
            if meta.get(field) != value:
                raise GraphCacheError(
                    f"graph cache {path} has {field}={meta.get(field)!r}, expected {value!r}"
                )
        if meta.get("texts_fingerprint") != fingerprint:
            raise GraphCacheError(f"graph cache {path} was built from other texts than {key!r}'s")
        if meta.get("checksum") != _checksum(arrays):
            raise GraphCacheError(f"graph cache {path} is corrupt (checksum mismatch)")
        return arrays, meta

    def _build(self, key: str, texts: list[str], parser: Parser) -> dict[str, np.ndarray]:
        """Parses the distinct texts in chunks and packs their graphs into flat arrays."""
        distinct = list(dict.fromkeys(texts))
        position = {text: u for u, text in enumerate(distinct)}
        spans: list[np.ndarray] = []
        edges: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in GRAPH_KINDS}
        labels: dict[str, list[np.ndarray]] = {k: [] for k in GRAPH_KINDS}
        with tqdm(
            total=len(distinct),
            desc=f"parse {key}",
            unit="text",
            # None: tqdm draws only on a terminal (no frames in a log file)
            disable=True if not self.show_progress else None,
        ) as bar:
            for at in range(0, len(distinct), self.chunk_size):
                chunk = distinct[at : at + self.chunk_size]
                try:
                    parsed = parser.parse(chunk)
                except ParseError as error:
                    where = texts.index(chunk[error.index]) if error.index is not None else None
                    raise ParseError(f"{key}: text {where}: {error}", index=where) from error
                for sentence in parsed:
                    spans.append(np.asarray(sentence.spans, dtype=INDEX_DTYPE).reshape(-1, 2))
                    for kind, builder in GRAPH_KINDS.items():
                        graph = builder(sentence)
                        edges[kind].append(compact(graph))
                        labels[kind].append(label_ids(graph))
                bar.update(len(chunk))
        arrays = {
            "text_order": np.fromiter((position[t] for t in texts), np.int64, len(texts)),
            "word_offsets": _offsets([s.shape[0] for s in spans]),
            "spans": _concat(spans, (0, 2), INDEX_DTYPE),
        }
        for kind, pairs in edges.items():
            arrays[f"{kind}.edge_offsets"] = _offsets([t.shape[0] for _, t in pairs])
            arrays[f"{kind}.edge_index"] = _concat(
                [e for e, _ in pairs], (2, 0), INDEX_DTYPE, axis=1
            )
            arrays[f"{kind}.edge_type"] = _concat([t for _, t in pairs], (0,), TYPE_DTYPE)
            arrays[f"{kind}.edge_label"] = _concat(labels[kind], (0,), LABEL_DTYPE)
        return arrays

    def _unpack(self, arrays: dict[str, np.ndarray]) -> list[SentenceGraphs]:
        word_offsets = arrays["word_offsets"].tolist()
        spans = arrays["spans"]
        kinds = [
            (
                kind,
                arrays[f"{kind}.edge_offsets"].tolist(),
                arrays[f"{kind}.edge_index"],
                arrays[f"{kind}.edge_type"],
                arrays[f"{kind}.edge_label"],
            )
            for kind in self.kinds
        ]
        distinct = []
        for u in range(len(word_offsets) - 1):
            edges, labels = {}, {}
            for kind, offsets, edge_index, edge_type, edge_label in kinds:
                a, b = offsets[u], offsets[u + 1]
                edges[kind] = (edge_index[:, a:b], edge_type[a:b])
                labels[kind] = edge_label[a:b]
            distinct.append(
                SentenceGraphs(spans[word_offsets[u] : word_offsets[u + 1]], edges, labels)
            )
        return [distinct[u] for u in arrays["text_order"].tolist()]


def _offsets(counts: list[int]) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _concat(
    parts: list[np.ndarray], empty_shape: tuple[int, ...], dtype, axis: int = 0
) -> np.ndarray:
    if not parts:
        return np.zeros(empty_shape, dtype=dtype)
    return np.concatenate(parts, axis=axis).astype(dtype, copy=False)
