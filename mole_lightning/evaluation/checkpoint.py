"""Loading a trained run back for evaluation: the checkpoint file, its run directory and
the run's resolved config."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mole_lightning.errors import CheckpointError, ConfigError
from mole_lightning.models.glue_module import GlueModule
from mole_lightning.utils.checkpoint_io import load_checkpoint
from mole_lightning.utils.config_upgrade import upgrade_config
from mole_lightning.utils.run_info import METRICS, RESOLVED_CONFIG


@dataclass
class EvalRun:
    """A trained checkpoint, loaded.

    Attributes:
        ckpt: the checkpoint file.
        run_dir: the run directory (``eval_<suite>.*`` files go here).
        cfg: the run's resolved config (``resolved_config.yaml``, renamed keys under
            today's names) with the data and cache overrides of the evaluation applied, and
            the checkpoint's own task node.
        model: the ``GlueModule`` (backbone from its source + the trained weights and the
            method's structure), in eval mode on ``device``.
        device: where the model runs.
    """

    ckpt: Path
    run_dir: Path
    cfg: DictConfig
    model: GlueModule
    device: torch.device

    @property
    def task(self) -> str:
        return self.cfg.task.name

    def reference_metrics(self) -> dict[str, float]:
        """The dev metrics the run itself recorded for this checkpoint: ``best/<k>`` of
        ``metrics.json`` for the best checkpoint, the final ``<k>`` for any other one."""
        path = self.run_dir / METRICS
        if not path.is_file():
            return {}
        recorded = json.loads(path.read_text())
        prefix = "best/" if self.ckpt.name.startswith("best") else ""
        return {
            k[len(prefix) :]: float(v)
            for k, v in recorded.items()
            if k.startswith(prefix + "val/") and not k.endswith(("_best", "loss", "loss_mm"))
        }


def resolve_checkpoint(ckpt_path: str | Path) -> tuple[Path, Path]:
    """``(checkpoint file, run directory)`` of a run directory (its best checkpoint, else
    ``last.ckpt``) or of a ``.ckpt`` file inside ``<run>/checkpoints/``.

    Raises:
        ConfigError: nothing there, or a run directory without checkpoints.
    """
    path = Path(ckpt_path)
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return path, run_dir
    if not path.is_dir():
        raise ConfigError(f"ckpt_path={ckpt_path!r}: no such checkpoint file or run directory")
    candidates = sorted((path / "checkpoints").glob("best*.ckpt")) or sorted(
        (path / "checkpoints").glob("last.ckpt")
    )
    if not candidates:
        raise ConfigError(
            f"ckpt_path={ckpt_path!r}: no checkpoints/best-*.ckpt or checkpoints/last.ckpt in "
            "this run directory; pass a .ckpt file or a directory train.py wrote"
        )
    return candidates[-1], path


def load_eval_run(
    ckpt_path: str | Path, overrides: dict | None = None, device: str = "auto"
) -> EvalRun:
    """Loads a checkpoint and its run's config.

    Args:
        ckpt_path: a run directory or a ``.ckpt`` file.
        overrides: dotted config keys to override in the run's config (``data.dir``,
            ``paths.cache_dir``, ``data.eval_batch_size``); ``None`` values are skipped.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ...

    Raises:
        ConfigError: no checkpoint, or no ``resolved_config.yaml`` beside it, or a task
            that is not a GLUE or custom classification/regression task.
        CheckpointError: the file is not a whole checkpoint, is refused as unsafe, or
            belongs to another run (``check_checkpoint``).
    """
    ckpt, run_dir = resolve_checkpoint(ckpt_path)
    config_path = run_dir / RESOLVED_CONFIG
    if not config_path.is_file():
        raise ConfigError(
            f"{config_path} missing: evaluate.py reads the run's data and parser settings from "
            "it; point ckpt_path at a checkpoint inside a run directory written by train.py"
        )
    cfg = OmegaConf.create(upgrade_config(OmegaConf.load(config_path)))
    check_checkpoint(ckpt, cfg, config_path)
    for key, value in (overrides or {}).items():
        if value is not None:
            OmegaConf.update(cfg, key, value, merge=False)
    if cfg.task.get("kind", "glue") not in ("glue", "custom"):
        raise ConfigError(
            f"{ckpt}: task {cfg.task.name!r} is a {cfg.task.kind} task; evaluate.py evaluates "
            "GLUE and custom-task checkpoints (E2E is scored by its own validation)"
        )
    target = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    model = load_module(ckpt, target)
    # the task as the model was trained on it (a custom task's labels, read from its
    # training data when the run started)
    cfg.task = OmegaConf.create(model.hparams["task"])
    return EvalRun(
        ckpt=ckpt, run_dir=run_dir, cfg=cfg, model=model.to(target).eval(), device=target
    )


def check_checkpoint(ckpt: Path, cfg: DictConfig | None, config_path: Path | None = None) -> dict:
    """Reads ``ckpt`` safely (``load_checkpoint``) and checks it is a checkpoint of the run
    whose config is ``cfg``: the task, method and backbone its ``hyper_parameters`` record
    are the run's. Returns those ``hyper_parameters``.

    Args:
        cfg: the run's resolved config (``None``: no run to check against).
        config_path: where ``cfg`` was read (named in the message).

    Raises:
        CheckpointError: not a whole checkpoint, refused as unsafe, without the recorded
            config, or one of another task, method or backbone than the run's.
    """
    hparams = load_checkpoint(ckpt).get("hyper_parameters")
    if not isinstance(hparams, dict) or not all(
        isinstance(hparams.get(n), dict) for n in ("task", "method", "backbone")
    ):
        raise CheckpointError(
            f"{ckpt}: records no task, method and backbone (hyper_parameters): not a "
            "checkpoint train.py wrote"
        )
    if cfg is None:
        return hparams
    differ = [
        f"{node} {hparams[node].get('name')!r}, the run's {cfg[node].name!r}"
        for node in ("task", "method", "backbone")
        if hparams[node].get("name") != cfg[node].name
    ]
    if differ:
        raise CheckpointError(
            f"{ckpt} is a checkpoint of another run: its {'; '.join(differ)} "
            f"({config_path or 'the run config'}); evaluate it in the run folder it came from"
        )
    return hparams


def load_module(ckpt: Path, device: torch.device | str = "cpu") -> GlueModule:
    """``GlueModule.load_from_checkpoint``: the backbone from its source, then the trained
    weights and the method's structure (Lightning's list of the backbone weights the
    checkpoint does not hold, by design, is silenced). Loaded with ``weights_only=True``
    after ``load_checkpoint`` has checked the file.

    Raises:
        CheckpointError: not a whole checkpoint, or refused as unsafe.
    """
    load_checkpoint(ckpt)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found keys that are in the model state dict")
        return GlueModule.load_from_checkpoint(str(ckpt), map_location=device, weights_only=True)
