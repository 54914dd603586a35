"""The LightningDataModule of GLUE-style tasks (a GLUE task, or a custom one from your own
files): read, tokenize and cache, (parse into word graphs), batch."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from mole_lightning.core.backbone_source import check_max_length, load_tokenizer
from mole_lightning.core.tasks import GlueTaskSpec, get_task
from mole_lightning.data.collate import collate_glue
from mole_lightning.data.custom import (
    custom_graph_keys,
    custom_source,
    custom_splits,
    read_custom_split,
)
from mole_lightning.data.glue import GlueExample, read_glue_split
from mole_lightning.data.loaders import data_seed, make_loader
from mole_lightning.data.tokenized_cache import (
    file_fingerprint,
    load_or_tokenize,
    load_tokenized,
)
from mole_lightning.errors import ConfigError
from mole_lightning.graphs import GraphStore


def graph_store(
    parser_cfg: DictConfig | None, cache_dir: str | Path, kinds: list[str], **kwargs
) -> GraphStore:
    """The graph cache under a run's ``paths.cache_dir`` (its ``graphs`` folder).

    ``scripts/parse.py`` warms the cache through this and ``graph_keys``, so it writes
    exactly the files that ``GlueDataModule`` later loads.
    """
    return GraphStore(parser_cfg, Path(cache_dir) / "graphs", kinds, **kwargs)


def task_splits(spec: GlueTaskSpec, data: Mapping) -> list[str]:
    """The splits a task reads: ``train``, its dev split(s) and, for a custom task with
    a test file, ``test``."""
    if spec.kind == "custom":
        return custom_splits(data)
    return ["train", *spec.dev_splits]


def read_split(spec: GlueTaskSpec, split: str, data: Mapping) -> list[GlueExample]:
    """The rows of one split: a GLUE task's from ``data.dir`` (or the hub), a custom
    task's from its file (or ``data.dataset``)."""
    if spec.kind == "custom":
        return read_custom_split(spec, split, data)
    return read_glue_split(spec, split, data.get("dir"), data.get("skip_malformed", False))


def split_source(spec: GlueTaskSpec, split: str, data: Mapping) -> str:
    """What the tokenized cache of a split is keyed by: the rows' source (a local file by
    a hash of its content) and how they are read."""
    if spec.kind == "custom":
        return custom_source(spec, split, data)
    data_dir = data.get("dir")
    if data_dir is None:
        return f"glue-hub:{spec.name}:{split}"
    stem = "train" if split == "train" else spec.dev_splits[split]
    path = Path(data_dir) / spec.folder / f"{stem}.tsv"
    return f"glue-tsv:{spec.name}:{split}:{file_fingerprint(path)}"


def graph_keys(spec: GlueTaskSpec, split: str, data: Mapping) -> list[str]:
    """The graph cache key of each text column of a split (``text_a``, then ``text_b``
    for pair tasks); ``graph_texts`` gives each key's texts. A custom split's keys come
    from its file's content (``custom_graph_keys``)."""
    if spec.kind == "custom":
        return custom_graph_keys(spec, split, data)
    columns = ["a", "b"] if spec.is_pair else ["a"]
    return [f"glue-{spec.name}-{split}-text_{c}" for c in columns]


def graph_texts(examples: list[GlueExample], key: str) -> list[str]:
    """The texts parsed under ``key``: the examples' ``text_a`` or ``text_b`` column."""
    return [e.text_a if key.endswith("text_a") else e.text_b for e in examples]


class GlueDataModule(pl.LightningDataModule):
    """A GLUE task from the hub (``data.dir=null``) or a local ``glue_data`` folder, or a
    custom task from its files (``data.train_file``, ...) or ``data.dataset``.

    ``prepare_data`` (rank 0 only) reads, tokenizes and, for graph methods, parses every
    split and writes the caches; ``setup`` (every rank) only loads them. Batches are
    dynamically padded; for graph methods they carry a ``WordGraphBatch`` under
    ``word_graphs``.

    ``train_batch_size`` (``data.batch_size`` at first) is read each time the training
    loader is built, so a phase change can set it (MoLE's retrain phase).

    Args:
        task: a GLUE task's name, or a task's spec (a custom task's: ``task_spec`` of its
            resolved node, as ``GlueModule.spec`` holds it).
        data: the ``data`` config node (dir, max_length, batch sizes, workers, ...).
        backbone: the ``backbone`` config node (for the tokenizer).
        cache_dir: root folder of the tokenized and graph caches.
        parser: the ``parser`` config node; used only when ``graph_kinds`` is set.
        graph_kinds: word-graph kinds the method reads (``None``: no graphs).
    """

    def __init__(
        self,
        task: str | GlueTaskSpec,
        data: DictConfig,
        backbone: DictConfig,
        cache_dir: str | Path,
        parser: DictConfig | None = None,
        graph_kinds: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.spec: GlueTaskSpec = get_task(task) if isinstance(task, str) else task
        self.data_cfg = data
        self.tokenizer = load_tokenizer(backbone)
        check_max_length(data.max_length, backbone, self.tokenizer)
        self.cache_dir = Path(cache_dir)
        self.parser_cfg = parser
        self.graph_kinds = list(graph_kinds) if graph_kinds else None
        self.train_batch_size: int = data.batch_size
        self.datasets: dict[str, object] = {}
        self.graphs: dict[str, list] = {}

    @property
    def splits(self) -> list[str]:
        return task_splits(self.spec, self.data_cfg)

    @property
    def eval_splits(self) -> list[str]:
        """Evaluation split names, in dataloader order (MNLI: matched, then mismatched)."""
        return list(self.spec.dev_splits)

    def _source(self, split: str) -> str:
        return split_source(self.spec, split, self.data_cfg)

    def _read(self, split: str):
        return read_split(self.spec, split, self.data_cfg)

    def _graph_store(self) -> GraphStore:
        return graph_store(self.parser_cfg, self.cache_dir, self.graph_kinds)

    def _graph_keys(self, split: str) -> list[str]:
        return graph_keys(self.spec, split, self.data_cfg)

    def _texts(self, examples, key: str) -> list[str]:
        return graph_texts(examples, key)

    def prepare_data(self) -> None:
        with_offsets = self.graph_kinds is not None
        for split in self.splits:
            examples = None

            def read(split=split):
                nonlocal examples
                examples = examples or self._read(split)
                return examples

            load_or_tokenize(
                self.cache_dir / "tokenized",
                self._source(split),
                read,
                self.tokenizer,
                self.data_cfg.max_length,
                with_offsets,
            )
            if self.graph_kinds:
                store = self._graph_store()
                for key in self._graph_keys(split):
                    store.prepare(key, self._texts(read(), key))

    def setup(self, stage: str | None = None) -> None:
        with_offsets = self.graph_kinds is not None
        for split in self.splits:
            if split in self.datasets:
                continue
            self.datasets[split] = load_tokenized(
                self.cache_dir / "tokenized",
                self._source(split),
                self.tokenizer,
                self.data_cfg.max_length,
                with_offsets,
            )
            if self.graph_kinds:
                store = self._graph_store()
                examples = self._read(split)
                self.graphs[split] = [
                    store.load(k, self._texts(examples, k)) for k in self._graph_keys(split)
                ]

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        workers = self.data_cfg.get("num_workers", 0)
        collate = partial(
            collate_glue,
            pad_token_id=self.tokenizer.pad_token_id,
            pad_to_multiple_of=self.data_cfg.get("pad_to_multiple_of"),
            pad_to_length=self.data_cfg.max_length
            if self.data_cfg.get("pad_to_max_length")
            else None,
            graphs=self.graphs.get(split),
            graph_kinds=self.graph_kinds,
        )
        return make_loader(
            self.datasets[split],
            batch_size,
            shuffle,
            collate,
            workers,
            data_seed(self.data_cfg),
            bool(self.data_cfg.get("group_by_length")),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.train_batch_size, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [
            self._loader(s, self.data_cfg.eval_batch_size, shuffle=False) for s in self.eval_splits
        ]

    def test_dataloader(self) -> DataLoader:
        """The ``test`` split (a custom task's ``data.test_file``)."""
        if "test" not in self.splits:
            raise ConfigError(f"task {self.spec.name!r} has no test split (data.test_file)")
        return self._loader("test", self.data_cfg.eval_batch_size, shuffle=False)
