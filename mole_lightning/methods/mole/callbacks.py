"""MoLE's callbacks: temperature annealing, the prune-then-retrain plan and phase
(``PruneExperts``; the phases themselves are ``callbacks.mole_phases``), gate logging."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from mole_lightning.errors import ConfigError
from mole_lightning.methods.adapter import AdapterConfig, BottleneckAdapter
from mole_lightning.methods.mole.config import MoleConfig
from mole_lightning.reporting.export import export_table
from mole_lightning.utils.checkpoint_callbacks import LastCheckpoint

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
    """MoLE's prune-then-retrain plan and where the run stands in it: exploration (all
    experts, gated) for ``after_steps`` optimizer steps, then retraining the experts
    ``rule`` keeps. Each phase is its own ``Trainer.fit`` (``callbacks.mole_phases``
    prunes between them); this callback ends the exploration and records the phase.

    Exploration (``pruned_at`` is ``None``): after step ``after_steps`` it saves that step
    (``last.ckpt``, what the retrain phase starts from) and ends the fit without training
    or validating further. Retrain: with a ``phase``, the rest of the pruning epoch is
    skipped. The state (``pruned_at``, ``phase_start``) travels in every checkpoint, so a
    resumed run knows its phase and does not prune twice.

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
            the training data is read at the phase's batch size, and the run ends after
            ``phase.epochs`` more epochs (or at ``trainer.max_steps``).

    Attributes:
        pruned_at: the step of the prune (``None``: exploring).
        phase_start: ``{"epoch", "step"}`` where the retrain phase starts (with a
            ``phase``; ``None`` otherwise).
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

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and last_checkpoint(trainer) is None:
            raise ConfigError(
                "MoLE's retrain phase starts from last.ckpt: set "
                "callbacks.model_checkpoint.save_last=true (or method.prune.enabled=false)"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruned_at is not None:
            if self.phase is not None and self.phase_start is not None:
                self.log_retrain_phase(trainer, pl_module)
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

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.pruned_at is None:
            ends = trainer.global_step >= self.after_steps
            if ends:  # explored: this fit ends here
                trainer.should_stop = True
        else:
            start = self.phase_start
            ends = start is not None and trainer.current_epoch < start["epoch"]
        pl_module.end_epoch_early = ends  # the module skips this batch and the epoch's rest

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.pruned_at is None and trainer.global_step == self.after_steps:
            last_checkpoint(trainer).save_step(trainer)  # where the retrain phase starts

    def log_retrain_phase(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Logs the retrain phase's length in steps and epochs and its lr schedule."""
        assert self.phase is not None and self.phase_start is not None
        step, epoch = self.phase_start["step"], self.phase_start["epoch"]
        batches = trainer.num_training_batches
        full = self.phase.epochs * math.ceil(batches / trainer.accumulate_grad_batches)
        steps = pl_module.lr_schedule["steps"]
        warmup_ratio = pl_module.optimizer_settings().get("warmup_ratio", 0.0)
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
            if trainer.global_step < self.after_steps:
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


def prune_plan(config: MoleConfig) -> PruneExperts | None:
    """The ``PruneExperts`` of a MoLE config (``None`` with ``prune.enabled=false``)."""
    prune = config.prune
    if not prune.enabled:
        return None
    phase = prune.retrain_phase
    return PruneExperts(
        prune.after_steps,
        prune.top_k,
        prune.retrain,
        prune.reset_lr_schedule,
        rule=prune.rule,
        graph_layers=prune.graph_layers,
        phase=RetrainPhase(**asdict(phase)) if phase.epochs is not None else None,
    )


def last_checkpoint(trainer: pl.Trainer) -> LastCheckpoint | None:
    """The trainer's ``LastCheckpoint`` (``None`` without ``save_last``)."""
    return next((c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)), None)


def train_batch_size(trainer: pl.Trainer) -> int | str:
    """The training batch size of the data module (``"?"`` when it has none)."""
    return getattr(trainer.datamodule, "train_batch_size", "?")


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


def export_importance(out_dir: Path, mole, stem: str, step: int) -> dict:
    """Writes the layer × expert importance table at ``step`` (JSON, CSV, PNG heatmap)
    into ``out_dir``."""
    importance = mole.importance()
    rows = [f"layer {i}" for i in range(importance.shape[0])]
    return export_table(
        out_dir,
        stem,
        importance,
        rows,
        mole.expert_names,
        title=f"MoLE expert importance (step {step})",
        axis_names=("layer", "expert"),
        extra={"step": step, "structure": mole.structure},
    )


class ExpertImportanceExport(Callback):
    """Logs every gate while training, every ``trainer.log_every_n_steps`` steps (the
    tables at the prune and at the end are written by ``callbacks.mole_phases``).

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
