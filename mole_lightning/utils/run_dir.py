"""Who may write a run folder: one process at a time, and only the run whose files are
there.

A run's folder (``paths.output_dir``, Hydra's ``hydra.run.dir``) is claimed for the whole
run by a file lock (``.run.lock``, the operating system's: a killed process leaves none
held), so a second attempt of the same run started meanwhile is refused. A new run into a
folder that holds another run's files (``run_info.json``, ``resolved_config.yaml``,
``metrics.json``, ``checkpoints/*.ckpt``) is refused too: its checkpoints, run record and
metrics would mix with the old ones. ``overwrite_run=true`` moves the old files to
``<folder>/_previous/<time>/`` first. A resume (the checkpoint lies in the folder) continues
the run there.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from mole_lightning.errors import ConfigError
from mole_lightning.utils.run_info import METRICS, RESOLVED_CONFIG, RUN_INFO

log = logging.getLogger(__name__)

RUN_LOCK = ".run.lock"
PREVIOUS_DIR = "_previous"
LOG_FILE = "train.log"
# what stays in place when a run's files are moved aside: Hydra's record of this command
# (.hydra/) and its log, already open (a copy of the old lines goes with the files)
KEPT = (".hydra", LOG_FILE, PREVIOUS_DIR, RUN_LOCK)


def run_files(output_dir: Path) -> list[str]:
    """The files of a run found in ``output_dir`` (relative names; empty for a fresh or
    missing folder)."""
    found = [name for name in (RUN_INFO, RESOLVED_CONFIG, METRICS) if (output_dir / name).is_file()]
    ckpts = sorted((output_dir / "checkpoints").glob("*.ckpt"))
    return found + [str(p.relative_to(output_dir)) for p in ckpts]


def resumes_in(ckpt: str | Path | None, output_dir: Path) -> bool:
    """Whether the checkpoint the run fits from lies in ``output_dir`` (a resume of the
    run there)."""
    return ckpt is not None and Path(ckpt).resolve().is_relative_to(output_dir.resolve())


def move_aside(output_dir: Path) -> Path:
    """Moves the files of the run in ``output_dir`` to ``<output_dir>/_previous/<time>/``
    (kept, never deleted) and returns that folder; ``train.log`` is copied there and
    emptied (its handler keeps appending to the same file)."""
    target = output_dir / PREVIOUS_DIR / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True)
    for entry in output_dir.iterdir():
        if entry.name not in KEPT:
            shutil.move(str(entry), str(target / entry.name))
    logfile = output_dir / LOG_FILE
    if logfile.is_file():
        shutil.copy2(logfile, target / LOG_FILE)
        with logfile.open("r+") as f:
            f.truncate(0)
    return target


@contextmanager
def claimed_run_dir(output_dir: Path, ckpt: str | Path | None, overwrite: bool) -> Iterator[None]:
    """Holds ``<output_dir>/.run.lock`` for the block, after checking the folder is this
    run's to write.

    Args:
        output_dir: the run's folder (created if missing).
        ckpt: the checkpoint the run fits from (``None``: from scratch).
        overwrite: ``overwrite_run``: move another run's files aside instead of refusing.

    Raises:
        ConfigError: another process holds the folder's lock (a second attempt of the
            same run), or the folder holds another run's files and ``overwrite`` is off.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(output_dir / RUN_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"another process is running in {output_dir} (it holds {lock.lock_file}): two "
            "attempts of one run would write over each other's checkpoints; wait for it to "
            "end or stop it, then resume with ckpt_path=" + str(output_dir)
        ) from None
    try:
        found = run_files(output_dir)
        if found and not resumes_in(ckpt, output_dir):
            if not overwrite:
                shown = ", ".join(found[:4]) + (" ..." if len(found) > 4 else "")
                raise ConfigError(
                    f"hydra.run.dir={output_dir} holds another run ({shown}): resume it with "
                    f"ckpt_path={output_dir}, choose another folder (hydra.run.dir=...), or "
                    f"add overwrite_run=true to move its files to {output_dir / PREVIOUS_DIR} "
                    "first"
                )
            moved = move_aside(output_dir)
            log.warning("overwrite_run=true: the previous run's files moved to %s", moved)
        yield
    finally:
        lock.release()
