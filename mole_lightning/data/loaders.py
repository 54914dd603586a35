"""One way to build a DataLoader: worker processes, pinned memory on GPU machines."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, collate: Callable, num_workers: int
) -> DataLoader:
    """A loader with ``num_workers`` persistent, forked worker processes (0: load in the
    main process) and pinned memory when CUDA is available."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        multiprocessing_context="fork" if num_workers > 0 and os.name == "posix" else None,
    )
