"""Training throughput of a run: samples per second of training time, saved beside it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from mole_lightning.core.paths import run_dir

THROUGHPUT_FILE = "throughput.json"


def batch_size(batch: Any) -> int:
    """Examples in a training batch: the length of its first tensor (dict or sequence)."""
    values = batch.values() if isinstance(batch, dict) else batch
    for value in values:
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    raise TypeError(f"no tensor in the training batch ({type(batch).__name__})")


class TrainThroughput(Callback):
    """Counts training examples and the seconds spent in training epochs, validation
    excluded (data loading, forward, backward, optimizer step and checkpoint writes
    included), and writes ``throughput.json`` into the run directory when fitting ends:
    ``train_samples``, ``train_seconds``, ``train_samples_per_s``, ``steps``.

    A resumed run counts only what it trained itself; the phases of one run (MoLE's
    exploration and retraining, two fits) count together (``continue_from``).
    """

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self.epoch_started: float | None = None
        self.validation_started: float | None = None
        self.validation_seconds = 0.0

    def continue_from(self, previous: TrainThroughput) -> None:
        """Goes on counting from ``previous``, the same run's earlier fit."""
        self.samples, self.seconds = previous.samples, previous.seconds

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_started, self.validation_seconds = time.perf_counter(), 0.0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validation_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epoch_started is not None and self.validation_started is not None:
            self.validation_seconds += time.perf_counter() - self.validation_started
        self.validation_started = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.samples += batch_size(batch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epoch_started is not None:
            elapsed = time.perf_counter() - self.epoch_started
            self.seconds += elapsed - self.validation_seconds
        self.epoch_started = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.seconds <= 0:
            return
        record = {
            "train_samples": self.samples * trainer.world_size,
            "train_seconds": self.seconds,
            "train_samples_per_s": self.samples * trainer.world_size / self.seconds,
            "steps": trainer.global_step,
        }
        (run_dir(trainer) / THROUGHPUT_FILE).write_text(json.dumps(record, indent=2))
