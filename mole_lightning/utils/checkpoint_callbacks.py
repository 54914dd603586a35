"""Checkpoints and final validation: every score belongs to the weights it was measured on.

- The best checkpoint(s) (``ModelCheckpoint``) are saved only after a validation, with
  that validation's score.
- ``LastCheckpoint`` writes ``last.ckpt`` (no score) after every validation, every
  ``every_n_train_steps`` optimizer steps (also before the first validation) and at the
  end of training, so it holds the latest step, except a step whose validation has not
  ended: a run stopped during a validation resumes before it and validates again.
- ``ValidateLastStep``: the fit loop validates at the last training step, so the final
  metrics are those of the last step.
- ``RandomStates``: the global random states travel in every checkpoint, so a resumed run
  draws the same dropout masks and Gumbel noise as an uninterrupted one.
- ``RestoreLoaderPosition``: the training loader's saved position is put back even when
  Lightning built the loader before restoring the checkpoint.

Only Lightning's public API is used: hooks, ``Trainer`` properties and the checkpoint
dictionary.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, Checkpoint, ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import CombinedLoader

from mole_lightning.errors import ConfigError

LAST = "last.ckpt"


def build_checkpoint_callbacks(node: DictConfig) -> list[Checkpoint]:
    """The best-by-``monitor`` checkpoint and, with ``save_last``, ``LastCheckpoint``.

    Args:
        node: ``callbacks.model_checkpoint`` (dirpath, monitor, mode, save_top_k, save_last,
            every_n_train_steps, filename, auto_insert_metric_name).

    Raises:
        ConfigError: ``every_n_train_steps`` without ``save_last`` (the periodic
            checkpoint is ``last.ckpt``).
    """
    every = node.get("every_n_train_steps")
    if every and not node.save_last:
        raise ConfigError(
            f"callbacks.model_checkpoint.every_n_train_steps={every} writes last.ckpt; "
            "set callbacks.model_checkpoint.save_last=true"
        )
    best = ModelCheckpoint(
        dirpath=node.dirpath,
        monitor=node.monitor,
        mode=node.mode,
        save_top_k=node.save_top_k,
        save_last=False,
        # at the validation's end, before LastCheckpoint (listed after it) saves the step:
        # last.ckpt then records this validation's best, never a file it has replaced
        save_on_train_epoch_end=False,
        filename=node.filename,
        auto_insert_metric_name=node.auto_insert_metric_name,
    )
    return [best, LastCheckpoint(node.dirpath, every)] if node.save_last else [best]


class LastCheckpoint(Checkpoint):
    """Writes ``<dirpath>/last.ckpt``, the checkpoint to resume from, after every
    validation during fitting, every ``every_n_train_steps`` optimizer steps and at the
    end of training (never twice for one step).

    A ``Checkpoint`` subclass, so Lightning runs it after the other callbacks (and after
    ``ModelCheckpoint``, when listed after it): the file holds their updated state.

    A periodic save (``save_step``, at a step's ``on_train_batch_end``) goes to
    ``last.ckpt.pending`` and becomes ``last.ckpt`` (a rename) only once the step is known
    to need no validation: at the next batch's start, the epoch's end or training's end.
    When the step's validation starts instead, the pending file is dropped and the save
    after the validation replaces it. Lightning resumes a checkpoint written before a due
    validation past that validation (it never runs); so a run stopped during a
    validation resumes from an earlier checkpoint and runs it again.

    The save at the end of training is skipped when this fit trained no step (a resumed
    finished run, MoLE's exploration resumed at its last step): ``last.ckpt`` keeps the
    state it was resumed from, which is where the run stands.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None) -> None:
        self.path = Path(dirpath) / LAST
        self.pending = self.path.with_name(LAST + ".pending")
        self.every_n_train_steps = every_n_train_steps
        self._saved_step: int | None = None
        self._pending = False  # this process wrote the pending file
        self._trained = False  # this fit trained a step

    def _save(self, trainer: pl.Trainer, path: Path | None = None) -> bool:
        """Saves the trainer's state to ``path`` (default ``last.ckpt``) unless this step
        is saved already or the trainer is not fitting; returns whether it saved."""
        if (
            trainer.state.fn != TrainerFn.FITTING
            or trainer.sanity_checking
            or trainer.fast_dev_run
            or self._saved_step == trainer.global_step
        ):
            return False
        trainer.save_checkpoint(path or self.path, weights_only=False)  # the full state
        self._saved_step = trainer.global_step
        return True

    def _commit_pending(self, trainer: pl.Trainer) -> None:
        """The pending periodic save becomes ``last.ckpt`` (rank 0 wrote it)."""
        if self._pending and trainer.is_global_zero:
            self.pending.replace(self.path)
        self._pending = False

    def _drop_pending(self, trainer: pl.Trainer) -> None:
        """Deletes the pending file (also one a killed attempt left)."""
        if trainer.is_global_zero:
            self.pending.unlink(missing_ok=True)
        self._pending = False

    def save_step(self, trainer: pl.Trainer) -> None:
        """Saves the step that just trained (call at its ``on_train_batch_end``) to
        ``last.ckpt.pending``, which becomes ``last.ckpt`` unless the step's validation
        starts: the periodic save, and the last step of MoLE's exploration."""
        if self._save(trainer, self.pending):
            self._pending = True

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._drop_pending(trainer)
        self._trained = False

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._trained = True
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self.save_step(trainer)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._commit_pending(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._drop_pending(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_step = None  # after a step's validation: save again, with its outcome
        self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._commit_pending(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._commit_pending(trainer)
        if self._trained:
            self._save(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._drop_pending(trainer)  # whether its step needed a validation is unknown


class ValidateLastStep(Callback):
    """Validates at ``max_steps`` when training ends there.

    Lightning validates at epoch ends and every ``val_check_interval``; when ``max_steps``
    ends training mid-epoch, the last steps would go unscored and ``last.ckpt`` would hold
    an older step. At ``max_steps`` this sets ``trainer.should_stop``, for which the fit
    loop runs one more validation (and ``ModelCheckpoint`` saves with its fresh score).

    ``validated_step`` is the global step of the latest validation during fitting
    (``None`` before the first); ``train`` validates after fitting when it is older than
    the last step (e.g. ``check_val_every_n_epoch`` skipped the last epoch).
    """

    def __init__(self) -> None:
        self.validated_step: int | None = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            self.validated_step = trainer.global_step


def random_states() -> dict[str, Any]:
    """The global random states (torch CPU and CUDA, numpy, ``random``), as a checkpoint
    holds them (tensors and plain values)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def set_random_states(states: dict[str, Any]) -> None:
    """Puts back global random states saved by ``random_states``."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])


class RandomStates(Callback):
    """Saves the global random states (``random_states``) in every checkpoint and
    restores them when a resumed run starts training (after the sanity check), so the run
    continues with the random numbers an uninterrupted run would draw. Under DDP the
    checkpoint holds rank 0's states."""

    def __init__(self) -> None:
        self._to_restore: dict | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["random_states"] = random_states()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._to_restore = checkpoint.get("random_states")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        states, self._to_restore = self._to_restore, None
        if states is not None:
            set_random_states(states)


def saved_loader_positions(checkpoint: dict[str, Any]) -> list[dict]:
    """The positions of the stateful training loaders that Lightning saved in
    ``checkpoint`` (the ``combined_loader`` entry of its loop states: each loader's
    ``state_dict()``, in loader order); empty when it saved none."""
    for loop in checkpoint.get("loops", {}).values():
        positions = loop.get("state_dict", {}).get("combined_loader")
        if positions:
            return list(positions)
    return []


class RestoreLoaderPosition(Callback):
    """Hands the training loaders the positions saved in the checkpoint when a resumed
    run starts training.

    Lightning saves every stateful training loader's ``state_dict()`` in the checkpoint,
    but gives it back only when it builds the loader after restoring the checkpoint: with
    ``trainer.max_epochs`` set, ``estimated_stepping_batches`` (the LR schedule's length)
    builds it before, and the position would be dropped (the resumed run would start its
    epoch over). The loader's iterator starts at its first batch, after this hook, so
    loading here is in time; loading a position Lightning loaded already changes nothing.
    A position from the end of an epoch is reset when the next epoch sets its sampler.
    """

    def __init__(self) -> None:
        self._positions: list[dict] = []

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._positions = saved_loader_positions(checkpoint)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        positions, self._positions = self._positions, []
        if not positions:
            return
        loaders = CombinedLoader(trainer.train_dataloader).flattened
        stateful = [dl for dl in loaders if hasattr(dl, "load_state_dict")]
        for loader, position in zip(stateful, positions, strict=True):
            loader.load_state_dict(position)
