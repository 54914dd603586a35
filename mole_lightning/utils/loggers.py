"""Building the run's loggers from the ``logger`` config group."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from mole_lightning.errors import ConfigError


def wandb_mode(requested: str | None) -> str:
    """``online`` when requested or when the user is logged in to W&B, else ``offline``.

    ``WANDB_MODE`` in the environment wins over the config.
    """
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if requested:
        return requested
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        logged_in = netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    return "online" if logged_in else "offline"


def build_loggers(cfg: DictConfig, output_dir: Path) -> list[Logger]:
    """One Lightning logger per entry of ``cfg.logger`` (``wandb``, ``csv``)."""
    loggers: list[Logger] = []
    for name, node in (cfg.get("logger") or {}).items():
        if name == "wandb":
            loggers.append(
                WandbLogger(
                    project=node.project,
                    entity=node.get("entity"),
                    mode=wandb_mode(node.get("mode")),
                    group=node.get("group"),
                    tags=list(node.get("tags") or []),
                    save_dir=str(output_dir),
                    log_model=node.get("log_model", False),
                    config=OmegaConf.to_container(cfg, resolve=True),
                )
            )
        elif name == "csv":
            loggers.append(
                CSVLogger(save_dir=str(output_dir), name=node.get("name", "csv"), version="")
            )
        else:
            raise ConfigError(
                f"unknown logger {name!r}; valid loggers: wandb, csv (or logger=none)"
            )
    return loggers
