"""Releasing the heap's free pages before loader workers fork (``mole_lightning.utils.heap``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mole_lightning.data import loaders
from mole_lightning.utils.heap import release_free_heap
from tests.test_length_grouping import rte_datamodule


def resident_bytes() -> int:
    """This process's resident memory (``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.environ.get("LD_PRELOAD"),
    reason="glibc's heap, as the Linux training machines have it",
)
def test_fragmented_free_heap_is_given_back() -> None:
    # 3,000 blocks of 64 KiB come from the heap (below glibc's mmap threshold); keeping
    # the last one alive pins the heap's top, so free() alone cannot shrink it
    blocks = [bytearray(64 * 1024) for _ in range(3000)]
    for block in blocks:
        block[::4096] = b"\1" * len(block[::4096])  # touch every page
    pinned = blocks[-1]
    del blocks
    before = resident_bytes()
    assert release_free_heap()
    released = before - resident_bytes()
    assert released > 100 * 2**20, f"released {released / 2**20:.0f} MiB of ~190 MiB free"
    assert pinned[0] == 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loaders_release_the_heap_where_they_fork_workers(
    glue_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, num_workers: int
) -> None:
    calls = []
    monkeypatch.setattr(loaders, "release_free_heap", lambda: calls.append(1) or True)
    dm = rte_datamodule(glue_dir, tmp_path, group_by_length=False, num_workers=num_workers)
    (validation,) = dm.val_dataloader()  # RTE: one dev set
    for loader in (dm.train_dataloader(), validation):
        batch = next(iter(loader))
        assert batch["input_ids"].shape[0] == 16
    # a train and a validation loader: one release before each forks its workers
    assert len(calls) == (2 if num_workers else 0)
