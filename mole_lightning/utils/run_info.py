"""What a run leaves in its directory for later reading: config, versions, status, metrics."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import mole_lightning
from mole_lightning.utils.environment import environment_record
from mole_lightning.utils.machine import machine_record

RUN_INFO = "run_info.json"
METRICS = "metrics.json"
RESOLVED_CONFIG = "resolved_config.yaml"


def git_commit(cwd: Path | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` if it has uncommitted changes), or ``None``."""
    try:
        cwd = cwd or Path(mole_lightning.__file__).parent
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``text`` through a temporary file beside ``path`` (a reader never sees
    half a file); creates the parent folder. A failed write (a full disk) removes the
    temporary file and leaves ``path`` as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, payload: dict) -> None:
    """Writes JSON atomically (a reader never sees half a file)."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=float))


def new_wandb_id() -> str:
    """A W&B run id (8 characters from ``[0-9a-f]``, valid in W&B's id alphabet)."""
    return secrets.token_hex(4)


def start_run(cfg: DictConfig, output_dir: Path) -> dict:
    """Saves the resolved config and a ``run_info.json`` with status ``running``, the git
    commit, the environment (key package versions, whether the lock is in use) and the
    machine (CPU, cores, torch threads, GPU).

    A run resumed in its own folder keeps its ``run_info.json`` fields (its
    ``wandb_id`` too, so W&B continues the same run) and appends
    ``{"at", "previous_status"}`` to its ``resumes`` list.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / RESOLVED_CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    previous = output_dir / RUN_INFO
    if previous.is_file():
        old = json.loads(previous.read_text())
        resume = {"at": now, "previous_status": old.get("status")}
        info = {k: v for k, v in old.items() if k not in ("ended", "error")}
        info.update(status="running", resumes=[*old.get("resumes", []), resume])
        info.update(package_version=mole_lightning.__version__, git_commit=git_commit())
        info.update(environment=environment_record(), machine=machine_record())
        info.setdefault("wandb_id", new_wandb_id())  # a run from before the field
    else:
        info = {
            "status": "running",
            "task": cfg.task.name,
            "method": cfg.method.name,
            "backbone": cfg.backbone.name,
            "seed": cfg.seed,
            "package_version": mole_lightning.__version__,
            "git_commit": git_commit(),
            "environment": environment_record(),
            "machine": machine_record(),
            "started": now,
            "wandb_id": new_wandb_id(),
        }
    write_json(previous, info)
    return info


def finish_run(
    output_dir: Path, info: dict, status: str, metrics: dict | None = None, error: str | None = None
) -> None:
    """Records the run's end (``finished``, ``failed`` or ``interrupted``) and its final
    metrics.

    When the atomic write of ``run_info.json`` fails (a full disk has no room for the
    temporary copy), the file is rewritten in place, in the room its own earlier
    content frees, so a run that failed for want of space still says so.
    """
    info = {**info, "status": status, "ended": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if error:
        info["error"] = error
    path = output_dir / RUN_INFO
    try:
        write_json(path, info)
    except OSError:
        if not path.is_file():
            raise
        path.write_text(json.dumps(info, indent=2, default=float))
    if metrics is not None:
        write_json(output_dir / METRICS, metrics)
