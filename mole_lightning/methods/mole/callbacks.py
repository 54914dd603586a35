"""MoLE's training phases: temperature annealing, prune-then-retrain, importance export."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from mole_lightning.core.paths import run_dir
from mole_lightning.errors import ConfigError
from mole_lightning.methods.adapter import AdapterConfig, BottleneckAdapter
from mole_lightning.methods.mole import MoleAdapters
from mole_lightning.reporting.export import (
    export_table,
    log_structure_to_wandb,
    log_table_to_wandb,
)

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


PRUNE_RULES = ("per_layer", "graph_layers", "graph_layers_softmax")


@dataclass(frozen=True)
class RetrainPhase:
    """The retrain phase's own length, batch size and schedule, counted from the prune.

    Attributes:
        epochs: full epochs after the prune (the epoch of the prune ends there).
        batch_size: training batch size (``None``: the data module's).
        warmup_ratio: warmup of the phase's linear decay schedule, as a share of its steps
            (``None``: ``optim.warmup_ratio``).
    """

    epochs: int
    batch_size: int | None = None
    warmup_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ConfigError(
                f"prune.retrain_phase.epochs={self.epochs} and batch_size={self.batch_size} "
                "must be at least 1"
            )


class PruneExperts(Callback):
    """Prune-then-retrain: after ``after_steps`` optimizer steps, keep the experts ``rule``
    picks, delete the rest and their optimizer state, and go on training the pruned model.

    Args:
        after_steps: optimizer steps of the exploration phase.
        top_k: experts kept per layer (``rule="per_layer"``).
        retrain: ``continue`` (the kept experts keep their weights and Adam moments) or
            ``scratch`` (the authors: the pruned structure is re-initialised, head too).
        reset_lr_schedule: start a fresh warmup/decay schedule over the remaining steps
            (else the original schedule continues); a ``phase`` always starts a fresh one.
        rule: ``per_layer`` (the ``top_k`` most important experts of every layer, the
            paper's text), ``graph_layers`` (a graph expert in ``graph_layers`` layers, the
            MLP expert elsewhere, layers ranked as the authors' latest code ranks them:
            saturated scores, ties to the later layer) or ``graph_layers_softmax`` (the
            same from the unsaturated importances, ties to the earlier layer; see
            ``MoleAdapters.prune_to_graph_layers``).
        graph_layers: layers that keep a graph expert under the ``graph_layers`` rules.
        phase: the retrain phase's own epochs, batch size and warmup; ``None``: the run
            goes on as configured. With a phase the rest of the pruning epoch is skipped,
            the training data is reloaded at the phase's batch size, and the run ends after
            ``phase.epochs`` more epochs (or at ``trainer.max_steps``).

    Writes ``mole_importance_at_prune.{json,csv,png}`` (the scores the decision used) and
    ``mole_structure.json`` into the run directory, and logs how many steps and epochs
    each phase runs. The pruned structure and the phase travel in every later checkpoint,
    and a resumed run does not prune twice. Best-checkpoint tracking starts again at
    pruning (``forget_best_checkpoints``).
    """

    def __init__(
        self,
        after_steps: int,
        top_k: int = 1,
        retrain: str = "continue",
        reset_lr_schedule: bool = True,
        rule: str = "per_layer",
        graph_layers: int = 2,
        phase: RetrainPhase | None = None,
    ) -> None:
        if retrain not in ("continue", "scratch"):
            raise ConfigError(f"prune.retrain={retrain!r}; valid: continue, scratch")
        if rule not in PRUNE_RULES:
            raise ConfigError(f"prune.rule={rule!r}; valid: {', '.join(PRUNE_RULES)}")
        if after_steps < 1 or top_k < 1 or graph_layers < 0:
            raise ConfigError(
                f"prune.after_steps={after_steps} and prune.top_k={top_k} must be >= 1, "
                f"prune.graph_layers={graph_layers} >= 0"
            )
        self.after_steps, self.top_k = after_steps, top_k
        self.retrain, self.reset_lr_schedule = retrain, reset_lr_schedule
        self.rule, self.graph_layers, self.phase = rule, graph_layers, phase
        self.pruned_at: int | None = None
        self.phase_start: dict[str, int] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"pruned_at": self.pruned_at, "phase_start": self.phase_start}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruned_at = state_dict.get("pruned_at")
        self.phase_start = state_dict.get("phase_start")

    @property
    def phase_pending(self) -> bool:
        """Pruned, and the retrain phase starts with the next epoch."""
        return self.phase is not None and self.pruned_at is not None and self.phase_start is None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.phase is not None and self.pruned_at is not None:  # resumed after the prune
            set_train_batch_size(trainer, self.phase.batch_size)
            if self.phase_start is not None:
                trainer.fit_loop.max_epochs = self.phase_start["epoch"] + self.phase.epochs

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruned_at is not None:
            return
        total = trainer.estimated_stepping_batches
        if total < self.after_steps:
            rank_zero_warn(
                f"MoLE: this run trains {int(total)} optimizer steps, fewer than the "
                f"exploration phase (method.prune.after_steps={self.after_steps}): it will "
                "never prune. Lower method.prune.after_steps or train longer."
            )
        batches = trainer.num_training_batches
        rank_zero_info(
            f"MoLE exploration phase: {self.after_steps} steps = "
            f"{self.after_steps / max(batches, 1):.2f} "
            f"epochs of {batches} batches of {train_batch_size(trainer)} "
            f"(lr schedule: {pl_module.hparams.optim.get('schedule', 'linear')})"
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

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.phase_pending:
            self.start_phase(trainer, pl_module)

    def prune(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        mole = mole_part(pl_module)
        before = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        if trainer.is_global_zero:
            paths = export_importance(trainer, mole, "mole_importance_at_prune")
            log_table_to_wandb(trainer, "mole/importance_at_prune", paths)
        if self.rule == "graph_layers":
            structure = mole.prune_to_graph_layers(self.graph_layers, ranking="authors")
        elif self.rule == "graph_layers_softmax":
            structure = mole.prune_to_graph_layers(self.graph_layers, ranking="softmax")
        else:
            structure = mole.prune(self.top_k)
        if self.retrain == "scratch":
            mole.remove()
            pl_module.encoder.parts["mole"] = MoleAdapters.attach(
                pl_module.encoder.backbone, mole.cfg, structure
            )
            pl_module.reset_head()
        self.pruned_at = trainer.global_step
        forget_best_checkpoints(trainer)
        if self.phase is None:
            pl_module.restart_lr_schedule(trainer.global_step, fresh=self.reset_lr_schedule)
            rebuild_optimizers(trainer, keep_state=self.retrain == "continue")
        else:
            # skip the rest of this epoch; the phase starts with the next, on fresh data
            pl_module.end_epoch_early = True
            set_train_batch_size(trainer, self.phase.batch_size)
            trainer.fit_loop._combined_loader = None  # Lightning reloads it at epoch start
        after = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        if trainer.is_global_zero:
            (run_dir(trainer) / "mole_structure.json").write_text(
                json.dumps(
                    {
                        "pruned_at_step": self.pruned_at,
                        "rule": self.rule,
                        "top_k": self.top_k,
                        "graph_layers": self.graph_layers,
                        "structure": structure,
                    },
                    indent=2,
                )
            )
            # the kept structure, instead of gate weights that stay constant from here
            log_structure_to_wandb(trainer, "mole/structure", structure, mole.expert_names)
        kept = (
            f"top-{self.top_k} per layer"
            if self.rule == "per_layer"
            else f"graph experts in {self.graph_layers} layers ({self.rule}), mlp elsewhere"
        )
        rank_zero_info(
            f"MoLE pruned at step {self.pruned_at} (epoch {trainer.current_epoch}) to {kept}: "
            f"{structure}; trainable parameters {before:,} -> {after:,} "
            f"(method=adapter at bottleneck {mole.cfg.bottleneck}: {adapter_equivalent(pl_module, mole.cfg.bottleneck):,})"
        )
        for logger in trainer.loggers:
            logger.log_metrics({"params/trainable_after_prune": after}, step=trainer.global_step)

    def start_phase(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Starts the retrain phase at the beginning of the epoch after the prune: its
        epoch count, and a fresh optimizer with its own linear schedule over its steps."""
        assert self.phase is not None
        pl_module.end_epoch_early = False
        epoch, step = trainer.current_epoch, trainer.global_step
        self.phase_start = {"epoch": epoch, "step": step}
        trainer.fit_loop.max_epochs = epoch + self.phase.epochs
        batches = trainer.num_training_batches
        full = self.phase.epochs * math.ceil(batches / trainer.accumulate_grad_batches)
        steps = full if trainer.max_steps == -1 else min(full, trainer.max_steps - step)
        overrides: dict[str, Any] = {"schedule": "linear"}
        if self.phase.warmup_ratio is not None:
            overrides.update(warmup_ratio=self.phase.warmup_ratio, warmup_steps=None)
        pl_module.restart_lr_schedule(step, fresh=True, steps=steps, optim=overrides)
        rebuild_optimizers(trainer, keep_state=self.retrain == "continue")
        warmup_ratio = {**pl_module.hparams.optim, **overrides}.get("warmup_ratio", 0.0)
        rank_zero_info(
            f"MoLE retrain phase from step {step} (epoch {epoch}): {self.phase.epochs} epochs "
            f"of {batches} batches of {train_batch_size(trainer)} = {full} steps"
            + (
                f", capped at {steps} by trainer.max_steps={trainer.max_steps}"
                if steps < full
                else ""
            )
            + f"; lr linear decay over {steps} steps, warmup ratio {warmup_ratio}"
        )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruned_at is None:
            rank_zero_info(
                f"MoLE: training ended at step {trainer.global_step}, before the prune "
                f"(prune.after_steps={self.after_steps})"
            )
            return
        start = self.phase_start["step"] if self.phase_start else self.pruned_at
        steps = trainer.global_step - start
        per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        rank_zero_info(
            f"MoLE phases: exploration ran {self.pruned_at} steps; retrain ran {steps} steps "
            f"= {steps / max(per_epoch, 1):.2f} epochs of {per_epoch} steps "
            f"(batch size {train_batch_size(trainer)}), ending at step {trainer.global_step}"
        )


def train_batch_size(trainer: pl.Trainer) -> int | str:
    """The training batch size of the data module (``"?"`` when it has none)."""
    return getattr(trainer.datamodule, "train_batch_size", "?")


def set_train_batch_size(trainer: pl.Trainer, batch_size: int | None) -> None:
    """Sets the data module's training batch size (``None``: unchanged).

    Raises:
        ConfigError: the data module has no ``train_batch_size``.
    """
    if batch_size is None:
        return
    if not hasattr(trainer.datamodule, "train_batch_size"):
        raise ConfigError(
            "prune.retrain_phase.batch_size needs a data module with a train_batch_size "
            f"attribute; {type(trainer.datamodule).__name__} has none"
        )
    trainer.datamodule.train_batch_size = batch_size


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
    head = sum(p.numel() for p in pl_module.head.parameters() if p.requires_grad)
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
        axis_names=("layer", "expert"),
        extra={"step": trainer.global_step, "structure": mole.structure},
    )


class ExpertImportanceExport(Callback):
    """Logs every gate while training, every ``trainer.log_every_n_steps`` steps, and, at
    the end of fitting, writes ``mole_importance.{json,csv,png}`` (pruned experts blank)
    into the run directory and logs it to W&B.

    Logged at the step of the batch that just trained (the step of its ``train/loss``),
    per layer that still has a gate (nothing once pruning left one expert):
    ``mole/gate/layer<i>/<expert>`` (mean mixture weight over the batch's examples),
    ``mole/gate_logit/layer<i>/<expert>`` (the logit) and
    ``mole/importance_entropy/layer<i>`` (entropy of ``softmax(logits)`` in nats:
    ``log(experts)`` while the gate is undecided, towards 0 as it decides).
    """

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
        values: dict[str, float] = {}
        tables = (("gate", mole.gate_weights_mean()), ("gate_logit", mole.gate_logits()))
        for i, (layer, entropy) in enumerate(
            zip(mole.layers, mole.importance_entropy().tolist(), strict=True)
        ):
            if layer.gate is None:
                continue
            values[f"mole/importance_entropy/layer{i}"] = entropy
            for kind, table in tables:
                for name, value in zip(mole.expert_names, table[i].tolist(), strict=True):
                    if not math.isnan(value):
                        values[f"mole/{kind}/layer{i}/{name}"] = value
        # straight to the loggers: a key given to pl_module.log once is logged again at
        # every later step with its last value (Lightning's step cache), so a pruned gate
        # would go on showing its last weights
        if values:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step - 1)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            paths = export_importance(trainer, mole_part(pl_module), "mole_importance")
            log_table_to_wandb(trainer, "mole/importance", paths)
