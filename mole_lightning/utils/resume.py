"""Resuming a run: ``ckpt_path=<run dir>`` continues *that* run, in its folder, with its
saved config (``resolved_config.yaml``).

An override given with the resume that sets a value other than the saved one is refused
(``ConfigError`` naming each), unless ``resume_allow_changes=true``, which applies it.
``ckpt_path=<checkpoint file>`` starts a new run from that checkpoint with the composed
config. The Hydra run folder of a resume is the run's own folder (the ``mole_run_dir``
resolver in ``conf/hydra/default.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from mole_lightning.errors import ConfigError
from mole_lightning.utils.config_upgrade import upgrade_config
from mole_lightning.utils.run_info import RESOLVED_CONFIG

# keys that say how to resume rather than what the run is
RESUME_KEYS = ("ckpt_path", "resume_allow_changes", "overwrite_run")


def run_dir_of(ckpt_path: str | None) -> Path | None:
    """The run directory ``ckpt_path`` names (a folder), else ``None`` (a file or unset).

    Raises:
        ConfigError: nothing at ``ckpt_path`` (a mistyped path), or the folder holds no
            ``resolved_config.yaml`` (not a run directory).
    """
    if ckpt_path is None:
        return None
    if not Path(ckpt_path).exists():
        raise ConfigError(f"ckpt_path={ckpt_path!r}: no such run folder or checkpoint file")
    if not Path(ckpt_path).is_dir():
        return None
    run = Path(ckpt_path).resolve()
    if not (run / RESOLVED_CONFIG).is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path!r} is a folder without {RESOLVED_CONFIG}: give a run "
            "directory (logs/<task_name>/runs/<run>) or a checkpoint file"
        )
    return run


def _hydra_run_dir(ckpt_path: str | None, default: str) -> str:
    """``hydra.run.dir``: the run directory being resumed, else ``default``."""
    try:
        run = run_dir_of(ckpt_path)
    except ConfigError:
        return default  # resume_config reports it
    return str(run) if run else default


def register_run_dir_resolver() -> None:
    """Registers ``mole_run_dir`` (once): ``hydra.run.dir`` of conf/hydra/default.yaml."""
    if not OmegaConf.has_resolver("mole_run_dir"):
        OmegaConf.register_new_resolver("mole_run_dir", _hydra_run_dir)


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def resume_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The config to run: ``cfg`` itself, or for ``ckpt_path=<run dir>`` the run's saved
    config (renamed keys under today's names: ``upgrade_config``) with its output folder
    set to that run directory.

    Args:
        cfg: the config composed from the command line.
        overrides: the command line's overrides (``key=value``, ``group=option``).

    Raises:
        ConfigError: an override differs from the saved config and
            ``resume_allow_changes`` is not set; the message lists each key with its
            saved and given values.
    """
    run = run_dir_of(cfg.get("ckpt_path"))
    if run is None:
        return cfg
    saved = OmegaConf.create(upgrade_config(OmegaConf.load(run / RESOLVED_CONFIG)))
    changes = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key in RESUME_KEYS or key.startswith("hydra"):
            continue
        given, before = _plain(OmegaConf.select(cfg, key)), _plain(OmegaConf.select(saved, key))
        if given != before:
            changes[key] = (before, given)
    if changes and not cfg.get("resume_allow_changes"):
        listed = "; ".join(
            f"{k}: saved {old!r}, given {new!r}" for k, (old, new) in changes.items()
        )
        raise ConfigError(
            f"resuming {run}: overrides differ from the run's saved config ({listed}); drop "
            "them to resume the run as it was, or add resume_allow_changes=true to apply them"
        )
    for key, (_, new) in changes.items():
        OmegaConf.update(saved, key, new, force_add=True)
    saved.ckpt_path = str(run)
    saved.resume_allow_changes = bool(cfg.get("resume_allow_changes"))
    saved.paths.output_dir = str(run)
    saved.callbacks.model_checkpoint.dirpath = str(run / "checkpoints")
    return saved
