"""Batches for evaluation, through the training data path.

``EvalDataModule`` is the ``GlueDataModule`` of the checkpoint without its train split
(the dev suite). ``ExamplesDataModule`` serves any list of examples (AdvGLUE, perturbed
dev sets, another task's dev set) the same way: tokenized into the tokenized cache and,
for graph methods, parsed into the graph cache under ``paths.cache_dir``, keyed by a
fingerprint of the examples, so a second evaluation parses nothing.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader

from mole_lightning.core.tasks import GlueTaskSpec
from mole_lightning.data.datamodule import GlueDataModule
from mole_lightning.data.glue import GlueExample
from mole_lightning.evaluation.checkpoint import EvalRun
from mole_lightning.graphs.store import texts_fingerprint


class EvalDataModule(GlueDataModule):
    """The task's dev split(s) only: evaluation never tokenizes or parses the train set."""

    @property
    def splits(self) -> list[str]:
        return self.eval_splits


class ExamplesDataModule(GlueDataModule):
    """One evaluation split made of given examples.

    Args:
        name: names the set in cache keys (letters, digits, ``_.-``), e.g. ``advglue-rte``.
        examples: the rows; labels in the id space of ``task``'s spec (or scores).
        task: the task (a GLUE task's name, or a spec) that says how the rows look (pair
            or single).
        other arguments: as ``GlueDataModule``.
    """

    def __init__(
        self, name: str, examples: list[GlueExample], task: str | GlueTaskSpec, *args, **kwargs
    ) -> None:
        super().__init__(task, *args, **kwargs)
        self.name = name
        self.examples = examples
        texts = [f"{e.text_a}\t{e.text_b}\t{e.label}" for e in examples]
        self.fingerprint = texts_fingerprint(texts)[:16]

    @property
    def eval_splits(self) -> list[str]:
        return ["eval"]

    @property
    def splits(self) -> list[str]:
        return ["eval"]

    def _source(self, split: str) -> str:
        return f"eval:{self.name}:{self.fingerprint}"

    def _read(self, split: str) -> list[GlueExample]:
        return self.examples

    def _graph_keys(self, split: str) -> list[str]:
        columns = ["a", "b"] if self.spec.is_pair else ["a"]
        return [f"eval-{self.name}-{self.fingerprint}-text_{c}" for c in columns]


def _datamodule_args(run: EvalRun) -> tuple[tuple, dict]:
    cfg = run.cfg
    model = run.model
    kwargs = {
        "parser": cfg.get("parser"),
        "graph_kinds": model.encoder.graph_kinds if model.needs_graphs else None,
    }
    return (cfg.data, cfg.backbone, Path(cfg.paths.cache_dir)), kwargs


def dev_loaders(run: EvalRun) -> dict[str, DataLoader]:
    """The run's dev loaders by split name (MNLI: ``validation``, ``validation_mismatched``),
    built exactly as in training (same batch size, padding, caches)."""
    args, kwargs = _datamodule_args(run)
    datamodule = EvalDataModule(run.model.spec, *args, **kwargs)
    datamodule.prepare_data()
    datamodule.setup("validate")
    return dict(zip(datamodule.eval_splits, datamodule.val_dataloader(), strict=True))


def examples_loader(
    run: EvalRun, name: str, examples: list[GlueExample], task: str | GlueTaskSpec
) -> DataLoader:
    """A loader over ``examples`` (read as rows of ``task``: a GLUE task's name, or a
    spec) for the checkpoint of ``run``."""
    args, kwargs = _datamodule_args(run)
    datamodule = ExamplesDataModule(name, examples, task, *args, **kwargs)
    datamodule.prepare_data()
    datamodule.setup("validate")
    return datamodule.val_dataloader()[0]
