"""Checkpoint files, read safely and written whole.

- ``load_checkpoint`` reads a ``.ckpt`` with ``torch.load(weights_only=True)``: tensors,
  plain values and the types of ``SAFE_GLOBALS`` only. A file that needs anything else
  is refused (``UnsafeCheckpointError``) before any of it runs; a truncated, empty or
  text file fails with ``CheckpointError`` naming it.
- ``resume_checkpoint`` checks the checkpoint a run resumes from and, for a run's own
  ``last.ckpt`` that is damaged or missing, falls back to the newest whole checkpoint
  beside it, saying so.
- ``AtomicCheckpointIO`` is the Trainer's checkpoint writer (Lightning's ``CheckpointIO``
  plugin): each file is written to a temporary file in its folder and renamed over the
  destination, so a failed write (a full disk) leaves no partial or temporary file.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from mole_lightning.errors import CheckpointError

log = logging.getLogger(__name__)

SAFE_GLOBALS: list = []
"""The project's own types a checkpoint may hold besides tensors and plain values
(``torch.serialization.add_safe_globals``). None today: the config is saved as plain
containers, the method's structure, random states, loop and callback states as lists,
dicts, numbers, strings and tensors."""

torch.serialization.add_safe_globals(SAFE_GLOBALS)


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint needs objects outside the allow-list to load; it was not loaded."""


def _unpickler_detail(err: Exception) -> str:
    """The line of torch's weights-only error that says what was refused (``GLOBAL
    posix.system`` ...), else its first line."""
    text = str(err)
    found = re.search(r"[^\n]*GLOBAL [^\n]*", text) or re.search(
        r"WeightsUnpickler error: ([^\n]*)", text
    )
    detail = found.group(0) if found else (text.splitlines() or [""])[0]
    detail = detail.strip().removeprefix("WeightsUnpickler error: ")
    return detail.split(" was not an allowed")[0].rstrip(".")


def load_checkpoint(path: str | Path, mmap: bool = True) -> dict[str, Any]:
    """A Lightning checkpoint as a dict, loaded on the CPU with ``weights_only=True``.

    Args:
        path: the ``.ckpt`` file.
        mmap: map the tensors instead of reading them (enough to read the step, the
            config or to check the file is whole).

    Raises:
        UnsafeCheckpointError: the file holds objects other than tensors, plain values
            and ``SAFE_GLOBALS`` (code could run on loading it); nothing was loaded.
        CheckpointError: no such file; truncated, empty or not a checkpoint; not a
            Lightning checkpoint (no ``state_dict``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        detail = _unpickler_detail(err)
        if "GLOBAL" in detail:
            raise UnsafeCheckpointError(
                f"{path}: refused, not loaded: it holds objects other than tensors and plain "
                f"values ({detail}), which could run code; use a checkpoint train.py wrote"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({detail})") from None
    except (OSError, EOFError, RuntimeError, KeyError, ValueError, zipfile.BadZipFile) as err:
        reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path}: not a whole checkpoint ({reason}): the file is truncated, empty or "
            "not a checkpoint"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def checkpoint_step(path: str | Path) -> int:
    """The ``global_step`` saved in a checkpoint (read safely, tensors mapped)."""
    return int(load_checkpoint(path).get("global_step", 0))


def newest_whole_checkpoint(folder: Path, exclude: Path | None = None) -> tuple[Path, int] | None:
    """``(file, global_step)`` of the ``*.ckpt`` in ``folder`` with the highest step
    (the newest file on a tie) that loads whole and safely, ``exclude`` aside; ``None``
    when there is none. Files that fail are logged and skipped."""
    found: list[tuple[int, float, Path]] = []
    for path in folder.glob("*.ckpt"):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        try:
            found.append((checkpoint_step(path), path.stat().st_mtime, path))
        except CheckpointError as err:
            log.warning("skipping %s", err)
    if not found:
        return None
    step, _, path = max(found)
    return path, step


def resume_checkpoint(ckpt: Path, fall_back: bool) -> Path:
    """The checkpoint to resume from: ``ckpt`` once it loads whole and safely.

    Args:
        ckpt: the checkpoint asked for (a run's ``checkpoints/last.ckpt`` or a file).
        fall_back: when ``ckpt`` is missing or damaged, resume from the newest whole
            checkpoint in its folder instead (a run resumed in its own folder), with a
            warning naming both.

    Raises:
        UnsafeCheckpointError: ``ckpt`` holds more than tensors and plain values (never
            a reason to fall back).
        CheckpointError: ``ckpt`` is damaged and there is no whole one to fall back to.
    """
    try:
        load_checkpoint(ckpt)
        return ckpt
    except UnsafeCheckpointError:
        raise
    except CheckpointError as err:
        other = newest_whole_checkpoint(ckpt.parent, ckpt) if fall_back else None
        if other is None:
            if fall_back:
                raise CheckpointError(
                    f"{err}; {ckpt.parent} holds no other whole checkpoint to resume from"
                ) from None
            raise
        path, step = other
        log.warning(
            "%s; resuming from %s instead, the newest whole checkpoint (step %d)", err, path, step
        )
        return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` writing each local checkpoint whole or not at
    all: ``torch.save`` into memory (as Lightning does), written to ``.<name>.tmp-<pid>``
    in the destination's folder (one file system, so the rename is atomic; Lightning's
    own temporary file is in the system's temporary folder, and moving it across file
    systems copies it), flushed to disk, then renamed over the destination. A failed
    write (``OSError`` ENOSPC on a full disk) removes the temporary file, leaves an
    earlier file at that path as it was, and raises ``OSError`` naming the checkpoint.
    Remote paths (``s3://``) go to Lightning's writer."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()  # torch's zip writer hides a failed write behind its own error
        torch.save(checkpoint, buffer)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:
            raise OSError(err.errno, f"{err.strerror} (checkpoint not written)", str(path)) from err
        finally:
            tmp.unlink(missing_ok=True)
