"""One way to build a DataLoader: worker processes, pinned memory on GPU machines, and a
resumable shuffled order for training.

A training loader's position is part of Lightning's checkpoint: Lightning saves the
``state_dict()`` of every training loader that has one (``FitLoop.on_save_checkpoint``)
and hands it back to ``load_state_dict`` before the resumed run iterates
(``FitLoop.setup_data``). The order of epoch ``e`` is a permutation drawn from
``seed + e`` (``EpochShuffleSampler``, a ``DistributedSampler``, so Lightning calls its
``set_epoch`` and keeps it under DDP), and the state is ``{seed, epoch, batches}``: a
resumed run skips the batches the interrupted one already trained on, in the same order
(an unseeded run draws its seed, and the state keeps it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from transformers.trainer_pt_utils import get_length_grouped_indices

from mole_lightning.utils.heap import release_free_heap


class EpochShuffleSampler(DistributedSampler):
    """A shuffled order per epoch (``set_epoch``), from ``seed + epoch``, that can start
    ``start`` indices into the epoch; this process's share under DDP.

    With ``lengths`` the order is length-grouped as the transformers Trainer's
    ``group_by_length`` does it (``get_length_grouped_indices``): shuffle, cut into
    mega-batches of 50 batches, sort each by length, the longest batch first. Batches
    then hold rows of similar length and pad less; the order is still drawn from
    ``seed + epoch``. Under DDP each process takes every ``world``-th index of that order.

    Args:
        dataset: the rows (only its length is used).
        seed: the data-order seed (the run's seed).
        lengths: ``[rows]`` token count of each row, to group by length (None: plain
            shuffle).
        batch_size: the per-process batch size (needed with ``lengths``).
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        lengths: list[int] | None = None,
        batch_size: int | None = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0,
            shuffle=True,
            seed=seed,
        )
        if lengths is not None and (batch_size is None or len(lengths) != len(dataset)):
            raise ValueError(
                f"length-grouped order needs a batch size and one length per row "
                f"({len(lengths)} lengths for {len(dataset)} rows)"
            )
        self.lengths = lengths
        self.batch_size = batch_size
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        if self.lengths is None:
            return iter(list(super().__iter__())[start:])
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = get_length_grouped_indices(
            self.lengths, self.batch_size * self.num_replicas, generator=generator
        )
        order += order[: self.total_size - len(order)]
        return iter(order[self.rank : self.total_size : self.num_replicas][start:])


class HeapTrimmingDataLoader(DataLoader):
    """A DataLoader that, when it has workers, gives the heap's free pages back to the
    operating system before each iteration (the first one forks the persistent workers;
    later ones only trim): forked from a fragmented heap, the workers would hold a
    copy-on-write share of it that the parent then copies again
    (``mole_lightning.utils.heap``)."""

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers > 0:
            release_free_heap()
        return super().__iter__()


class ResumableDataLoader(HeapTrimmingDataLoader):
    """A ``HeapTrimmingDataLoader`` over an ``EpochShuffleSampler`` whose position in the
    epoch is saved in and restored from Lightning's checkpoint.

    The iterator is created at the first ``next()`` (after Lightning's ``set_epoch``), and
    counts the batches it yields: ``state_dict() == {"seed": s, "epoch": e, "batches": b}``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._yielded = 0

    def __iter__(self) -> Iterator[Any]:
        sampler = self.sampler
        self._yielded = sampler.start // self.batch_size
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.sampler.seed, "epoch": self.sampler.epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.seed = state["seed"]
        self.sampler.set_epoch(state["epoch"])
        self.sampler.start = state["batches"] * self.batch_size


def data_seed(data_cfg: Any) -> int:
    """The data-order seed: ``data.seed`` (the run's ``seed``); an unseeded run draws one
    (the loader's checkpoint state keeps it for a resume)."""
    seed = data_cfg.get("seed")
    return int(torch.randint(2**31, ())) if seed is None else int(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    collate: Callable,
    num_workers: int,
    seed: int = 0,
    group_by_length: bool = False,
) -> DataLoader:
    """A ``HeapTrimmingDataLoader`` with ``num_workers`` persistent, forked worker processes
    (0: load in the main process) and pinned memory when CUDA is available.
    ``shuffle=True`` gives a ``ResumableDataLoader`` whose order comes from ``seed`` and
    the epoch, length-grouped by the rows' ``input_ids`` with ``group_by_length``. Worker seeds
    come from the loader's own generator, so iterating never draws from the global RNG
    (dropout and Gumbel noise continue identically after a resume)."""
    kwargs = dict(
        batch_size=batch_size,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        multiprocessing_context="fork" if num_workers > 0 and os.name == "posix" else None,
        generator=torch.Generator().manual_seed(seed),
    )
    if shuffle:
        lengths = [len(ids) for ids in dataset["input_ids"]] if group_by_length else None
        sampler = EpochShuffleSampler(dataset, seed, lengths, batch_size)
        return ResumableDataLoader(dataset, sampler=sampler, **kwargs)
    return HeapTrimmingDataLoader(dataset, shuffle=False, **kwargs)
