"""The errors a user can act on: each message says what is wrong and what to do."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

USER_ERROR_EXIT_CODE = 2
"""Exit status of a command line stopped by a ``MoleError``."""


class MoleError(Exception):
    """Base of every error this framework raises on purpose."""


class ConfigError(MoleError, ValueError):
    """An unknown name or a bad value in the composed config."""


class DataFileError(MoleError, ValueError):
    """A data file is missing or malformed; the message names the file and line."""


class HubUnavailableError(MoleError, OSError):
    """A model or dataset could not be fetched from the Hugging Face hub."""


class CacheError(MoleError, RuntimeError):
    """An on-disk cache is missing, corrupt or was written by another version."""


class CheckpointError(MoleError, ValueError):
    """A checkpoint file is unreadable (truncated, empty, not a checkpoint), holds more
    than tensors and plain values (refused unloaded), or belongs to another run; the
    message names the file."""


@contextmanager
def reported_as_exit(reraise: bool = False) -> Iterator[None]:
    """Turns a ``MoleError`` raised inside the block into ``error: <message>`` on stderr
    and exit status 2 (``SystemExit``), the one way every command line reports a user's
    error; other exceptions pass unchanged.

    Args:
        reraise: print the message, then re-raise the ``MoleError`` itself instead of
            exiting (a Hydra multirun job, so Hydra records it as failed and goes on).
    """
    try:
        yield
    except MoleError as err:
        print(f"error: {err}", file=sys.stderr)
        if reraise:
            raise
        raise SystemExit(USER_ERROR_EXIT_CODE) from None
