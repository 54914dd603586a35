"""Building the run's loggers from the ``logger`` config group."""

from __future__ import annotations

import csv
import netrc
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from mole_lightning.errors import ConfigError
from mole_lightning.utils.checkpoint_io import checkpoint_step


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


def rows_before(metrics_csv: Path, step: int) -> list[dict[str, str]]:
    """The rows of a CSVLogger ``metrics.csv`` logged before ``step`` (its ``step``
    column below it), as ``{column: value as written}`` without the empty cells."""
    with metrics_csv.open(newline="") as f:
        rows = [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]
    return [row for row in rows if int(row["step"]) < step]


def csv_logger(output_dir: Path, name: str, resume_from: str | None) -> CSVLogger:
    """A CSVLogger writing ``<output_dir>/<name>/metrics.csv``. Lightning deletes an
    existing ``metrics.csv`` when a run starts; a run resumed in its own folder
    (``resume_from``: its checkpoint) keeps the rows its earlier attempts logged before
    the checkpoint's step, so the file holds the whole run (the steps after the
    checkpoint are trained again and logged again)."""
    logger = CSVLogger(save_dir=str(output_dir), name=name, version="")
    metrics_csv = Path(logger.log_dir) / "metrics.csv"
    if resume_from is None or not metrics_csv.is_file():
        return logger
    kept = rows_before(metrics_csv, checkpoint_step(resume_from))
    writer = logger.experiment  # created now: Lightning deletes the old file here
    for row in kept:
        writer.log_metrics(row, int(row.pop("step")))
    writer.save()
    return logger


def build_loggers(
    cfg: DictConfig,
    output_dir: Path,
    resume_from: str | None = None,
    wandb_id: str | None = None,
) -> list[Logger]:
    """One Lightning logger per entry of ``cfg.logger`` (``wandb``, ``csv``).

    Args:
        resume_from: the checkpoint the run resumes from (``csv`` keeps the rows logged
            before it).
        wandb_id: the run's W&B id (``run_info.json``): a resumed run continues the same
            W&B run instead of starting a second one.
    """
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
                    id=wandb_id,  # Lightning passes resume="allow"
                )
            )
        elif name == "csv":
            loggers.append(csv_logger(output_dir, node.get("name", "csv"), resume_from))
        else:
            raise ConfigError(
                f"unknown logger {name!r}; valid loggers: wandb, csv (or logger=none)"
            )
    if loggers and not any(isinstance(logger, CSVLogger) for logger in loggers):
        # csv/metrics.csv beside any other logger: scripts/plot_runs.py reads it
        loggers.append(csv_logger(output_dir, "csv", resume_from))
    return loggers


def finish_wandb(loggers: list[Logger], metrics: dict[str, float]) -> None:
    """Puts a finished run's final metrics (``val/*`` of the last validation, ``best/*``
    of the best checkpoint, ``params/*``, ``global_step``) into each W&B run's summary,
    then finishes the W&B run (an offline run's files are complete; a multirun's next job
    starts a run of its own).

    The summary would otherwise hold the last value logged of each key: ``best/*`` are
    never logged as metrics, and the re-validation of the best checkpoint logs ``val/*``
    with the best checkpoint's values, not the final ones. The W&B run exists: fitting
    started it.
    """
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(metrics)
            logger.experiment.finish()
