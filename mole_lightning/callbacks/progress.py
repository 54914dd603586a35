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
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        done = max(step - self.start_step, 1)
        elapsed = now - self.started
        parts = [f"train step {step}/{total} ({100 * step / max(total, 1):.1f}%)"]
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            parts.append(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")
        parts += [f"elapsed {clock(elapsed)}", f"~{clock((total - step) * elapsed / done)} left"]
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"train/loss {float(loss):.4f}")
        log.info(" | ".join(parts))
