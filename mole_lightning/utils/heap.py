"""Returning the C heap's free pages to the operating system before worker processes fork.

Training batches of varying length leave glibc's heap fragmented: after a few hundred
steps of MoLE's exploration on RTE (``max_length`` 256) the process holds about 9 GB of
which only a few hundred MB are live. A DataLoader forked then shares those pages
copy-on-write with its workers, and the parent copies each page again as its allocator
reuses it: every set of workers forked from a grown heap adds about the heap's size. MoLE's
retrain phase forks a new train and a new validation loader, and on a 24 GB machine that
ran out of memory (the OOM killer took a loader worker). ``malloc_trim(0)`` gives the free
pages back first, so the workers share only the live memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():
    """glibc's ``malloc_trim`` (``None`` on a C library without it: macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None)
    except OSError:
        return None


def release_free_heap() -> bool:
    """Gives the heap's free pages back to the operating system (glibc's
    ``malloc_trim(0)``); live memory is untouched. Returns whether the C library has it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
