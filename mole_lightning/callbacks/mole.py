"""MoLE's training phases: temperature annealing, prune-then-retrain, importance export."""

from __future__ import annotations

import json
import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from mole_lightning.callbacks.export import export_table, log_table_to_wandb, run_dir
from mole_lightning.errors import ConfigError
from mole_lightning.methods.adapter import AdapterConfig, BottleneckAdapter
from mole_lightning.methods.mole import MoleAdapters

SCHEDULES = ("constant", "linear", "exponential")


def mole_part(pl_module: pl.LightningModule):
    """The ``MoleAdapters`` of the module being trained."""
    return pl_module.encoder.parts["mole"]


def annealed_temperature(step: int, start: float, end: float, steps: int, schedule: str) -> float:
    """Temperature after ``step`` optimizer steps: ``start`` at 0, ``end`` from ``steps`` on.

    ``linear`` interpolates; ``exponential`` decays geometrically
    (``start * (end / start) ** (step / steps)``); ``constant`` stays at ``start``.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"temperature schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if schedule == "constant" or steps <= 0:
        return start
    frac = min(step / steps, 1.0)
    if schedule == "linear":
        return start + (end - start) * frac
    return start * math.exp(frac * math.log(end / start))


class TemperatureAnnealing(Callback):
    """Sets the Gumbel-Softmax temperature of every MoLE gate before each training step
    and logs it as ``mole/temperature``.

    Args:
        start, end: temperatures at step 0 and from ``steps`` on.
        steps: length of the schedule in optimizer steps (``None``: the whole run).
        schedule: ``constant``, ``linear`` or ``exponential``.
    """

    def __init__(
        self, start: float, end: float, steps: int | None, schedule: str = "exponential"
    ) -> None:
        if start <= 0 or end <= 0:
            raise ConfigError(f"temperatures must be positive (start={start}, end={end})")
        annealed_temperature(0, start, end, 1, schedule)  # validates the schedule name
        self.start, self.end, self.steps, self.schedule = start, end, steps, schedule

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        steps = self.steps if self.steps is not None else int(trainer.estimated_stepping_batches)
        temperature = annealed_temperature(
            trainer.global_step, self.start, self.end, steps, self.schedule
        )
        mole_part(pl_module).temperature = temperature
        pl_module.log("mole/temperature", temperature, on_step=True, on_epoch=False, batch_size=1)


class PruneExperts(Callback):
    """Prune-then-retrain: after ``after_steps`` optimizer steps, keep the ``top_k`` most
    important experts of every layer, delete the rest and their optimizer state, and go on
    training the pruned model.

    Args:
        after_steps: optimizer steps of the exploration phase.
        top_k: experts kept per layer.
        retrain: ``continue`` (the kept experts keep their weights and Adam moments) or
            ``scratch`` (the authors: the pruned structure is re-initialised, head too).
        reset_lr_schedule: start a fresh warmup/decay schedule over the remaining steps
            (else the original schedule continues).

    Writes ``mole_importance_at_prune.{json,csv,png}`` (the scores the decision used) and
    ``mole_structure.json`` into the run directory. The pruned structure travels in every
    later checkpoint, and a resumed run does not prune twice. Best-checkpoint tracking
    starts again at pruning (``forget_best_checkpoints``).
    """

    def __init__(
        self,
        after_steps: int,
        top_k: int = 1,
        retrain: str = "continue",
        reset_lr_schedule: bool = True,
    ) -> None:
        if retrain not in ("continue", "scratch"):
            raise ConfigError(f"prune.retrain={retrain!r}; valid: continue, scratch")
        if after_steps < 1 or top_k < 1:
            raise ConfigError(
                f"prune.after_steps={after_steps} and prune.top_k={top_k} must be >= 1"
            )
        self.after_steps, self.top_k = after_steps, top_k
        self.retrain, self.reset_lr_schedule = retrain, reset_lr_schedule
        self.pruned_at: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"pruned_at": self.pruned_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruned_at = state_dict.get("pruned_at")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        if self.pruned_at is None and total < self.after_steps:
            rank_zero_warn(
                f"MoLE: this run trains {int(total)} optimizer steps, fewer than the "
                f"exploration phase (method.prune.after_steps={self.after_steps}): it will "
                "never prune. Lower method.prune.after_steps or train longer."
            )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.pruned_at is None and trainer.global_step >= self.after_steps:
            self.prune(trainer, pl_module)

    def prune(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        mole = mole_part(pl_module)
        before = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        if trainer.is_global_zero:
            paths = export_importance(trainer, mole, "mole_importance_at_prune")
            log_table_to_wandb(trainer, "mole/importance_at_prune", paths)
        structure = mole.prune(self.top_k)
        if self.retrain == "scratch":
            mole.remove()
            pl_module.encoder.parts["mole"] = MoleAdapters.attach(
                pl_module.encoder.backbone, mole.cfg, structure
            )
            pl_module.reset_head()
        self.pruned_at = trainer.global_step
        forget_best_checkpoints(trainer)
        pl_module.restart_lr_schedule(trainer.global_step, fresh=self.reset_lr_schedule)
        rebuild_optimizers(trainer, keep_state=self.retrain == "continue")
        after = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        if trainer.is_global_zero:
            (run_dir(trainer) / "mole_structure.json").write_text(
                json.dumps(
                    {"pruned_at_step": self.pruned_at, "top_k": self.top_k, "structure": structure},
                    indent=2,
                )
            )
        rank_zero_info(
            f"MoLE pruned at step {self.pruned_at} to top-{self.top_k} per layer: "
            f"{structure}; trainable parameters {before:,} -> {after:,} "
            f"(method=adapter at bottleneck {mole.cfg.bottleneck}: {adapter_equivalent(pl_module, mole.cfg.bottleneck):,})"
        )
        for logger in trainer.loggers:
            logger.log_metrics({"params/trainable_after_prune": after}, step=trainer.global_step)


def forget_best_checkpoints(trainer: pl.Trainer) -> None:
    """Restarts best-checkpoint tracking: the exploration phase is another model, so its
    scores are not compared with the pruned model's and its best checkpoints (which the
    pruned model cannot load) are deleted. ``last.ckpt`` is kept."""
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint) or callback.monitor is None:
            continue
        for path in callback.best_k_models:
            if path != callback.last_model_path:
                trainer.strategy.remove_checkpoint(path)
        callback.best_k_models = {}
        callback.kth_best_model_path = ""
        callback.best_model_path = ""
        callback.best_model_score = None
        callback.kth_value = torch.tensor(math.inf if callback.mode == "min" else -math.inf)


def adapter_equivalent(pl_module: pl.LightningModule, bottleneck: int) -> int:
    """Trainable parameters ``method=adapter`` would have at the same bottleneck size
    (one bottleneck adapter per layer plus the same task head)."""
    hidden = pl_module.encoder.backbone.config.hidden_size
    per_layer = sum(
        p.numel()
        for p in BottleneckAdapter(hidden, AdapterConfig(bottleneck=bottleneck)).parameters()
    )
    head = sum(p.numel() for p in pl_module.head.parameters())
    return per_layer * len(mole_part(pl_module).layers) + head


def rebuild_optimizers(trainer: pl.Trainer, keep_state: bool) -> None:
    """Re-creates the optimizers over the current parameters (removed ones are gone from
    them and from their state); with ``keep_state`` the surviving parameters keep their
    optimizer state. Under DDP the model is re-wrapped so its reducer forgets removed
    parameters."""
    old_states = {}
    if keep_state:
        for optimizer in trainer.optimizers:
            old_states.update(optimizer.state)
    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy):
        strategy.model = trainer.lightning_module
        strategy.configure_ddp()
    strategy.setup_optimizers(trainer)
    if keep_state:
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p in old_states:
                        optimizer.state[p] = old_states[p]


def export_importance(trainer: pl.Trainer, mole, stem: str) -> dict:
    """Writes the layer × expert importance table (JSON, CSV, PNG heatmap)."""
    importance = mole.importance()
    rows = [f"layer {i}" for i in range(importance.shape[0])]
    return export_table(
        run_dir(trainer),
        stem,
        importance,
        rows,
        mole.expert_names,
        title=f"MoLE expert importance (step {trainer.global_step})",
        extra={"step": trainer.global_step, "structure": mole.structure},
    )


class ExpertImportanceExport(Callback):
    """Logs every gate's mean mixture weights while training (``mole/gate/<layer>/<expert>``)
    and, at the end of fitting, writes ``mole_importance.{json,csv,png}`` (pruned experts
    blank) into the run directory and logs it to W&B."""

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step % max(trainer.log_every_n_steps, 1) != 0:
            return
        mole = mole_part(pl_module)
        weights = mole.gate_weights_mean()
        for i, row in enumerate(weights.tolist()):
            for name, w in zip(mole.expert_names, row, strict=True):
                if not math.isnan(w):
                    pl_module.log(
                        f"mole/gate/layer{i}/{name}", w, on_step=True, on_epoch=False, batch_size=1
                    )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            paths = export_importance(trainer, mole_part(pl_module), "mole_importance")
            log_table_to_wandb(trainer, "mole/importance", paths)
