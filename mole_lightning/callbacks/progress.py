"""Progress as log lines, for runs whose output goes to a file (``nohup``, a cluster job).

Lightning's progress bar (Rich when installed) draws only on a terminal: in a log file a
20-minute epoch shows nothing until it ends. ``ProgressLog`` writes one line at most every
``every_seconds`` to the run's log (``train.log`` under Hydra, and stderr):

    train step 20/1560 (1.3%) | epoch 1/20 | elapsed 0:20:59 | ~26:58:10 left | train/loss 0.6870

The estimate is the remaining optimizer steps times the mean step time of this run so far
(validation included, so it is pessimistic early in an epoch and honest over many).
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


def clock(seconds: float) -> str:
    """``h:mm:ss`` of a duration in seconds."""
    return str(datetime.timedelta(seconds=round(seconds)))


class ProgressLog(Callback):
    """Logs the step, epoch, elapsed time, estimated time left and last training loss at
    most every ``every_seconds`` (the first line after the first step).

    Args:
        every_seconds: the least time between two lines.
    """

    def __init__(self, every_seconds: float) -> None:
        self.every_seconds = every_seconds
        self.started = 0.0
        self.start_step = 0
        self.last_line: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started, self.start_step, self.last_line = time.monotonic(), trainer.global_step, None

    @rank_zero_only
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.monotonic()
        if self.last_line is not None and now - self.last_line < self.every_seconds:
            return
        self.last_line = now
        loss = trainer.callback_metrics.get("train/loss")
        log.info(
            progress_line(
                trainer.global_step,
                trainer.estimated_stepping_batches,
                trainer.current_epoch,
                run_epochs(trainer),
                now - self.started,
                trainer.global_step - self.start_step,
                None if loss is None else float(loss),
            )
        )


def run_epochs(trainer: pl.Trainer) -> int | None:
    """The epochs this run will train: ``max_epochs``, or fewer when ``max_steps`` ends
    it first (20 steps of a 78-batch epoch are 1 epoch, not ``max_epochs=10``); never
    below the current epoch. ``None`` when neither bounds the run."""
    max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
    total, batches = trainer.estimated_stepping_batches, trainer.num_training_batches
    if not (math.isfinite(total) and math.isfinite(batches) and batches > 0):
        return max_epochs
    steps_per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
    epochs = math.ceil(total / steps_per_epoch)
    if max_epochs is not None:
        epochs = min(epochs, max_epochs)
    return max(epochs, trainer.current_epoch + 1)


def progress_line(
    step: int,
    total: float,
    epoch: int,
    max_epochs: int | None,
    elapsed: float,
    steps_run: int,
    loss: float | None,
) -> str:
    """One progress line. ``total`` (optimizer steps of the run) is ``inf`` for a run with
    neither ``max_steps`` nor ``max_epochs``: then neither the fraction nor the time left
    is shown. ``steps_run``: the steps this process made in ``elapsed`` seconds."""
    if math.isfinite(total):
        parts = [f"train step {step}/{int(total)} ({100 * step / max(total, 1):.1f}%)"]
    else:
        parts = [f"train step {step}"]
    if max_epochs is not None and max_epochs > 0:
        parts.append(f"epoch {epoch + 1}/{max_epochs}")
    parts.append(f"elapsed {clock(elapsed)}")
    if math.isfinite(total):
        parts.append(f"~{clock((total - step) * elapsed / max(steps_run, 1))} left")
    if loss is not None:
        parts.append(f"train/loss {loss:.4f}")
    return " | ".join(parts)
