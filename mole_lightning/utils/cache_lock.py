"""The file lock a cache build runs under, and what to do in a read-only cache folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock


@contextmanager
def cache_lock(lock_path: Path) -> Iterator[OSError | None]:
    """Holds the file lock ``lock_path`` for the block (concurrent builders of one cache
    wait for each other) and yields ``None``; where the lock file cannot be created (a
    read-only cache folder) yields the ``OSError`` instead, unlocked: the caller may
    still read a complete cache there, but must not build one."""
    lock = FileLock(str(lock_path))
    try:
        lock.acquire()
    except OSError as err:
        yield err
        return
    try:
        yield None
    finally:
        lock.release()
