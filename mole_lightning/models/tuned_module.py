"""What every task's LightningModule shares: config saving, the optimizer and its
schedule, parameter accounting, and checkpoints that hold only what trains."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchmetrics import MaxMetric, MinMetric

from mole_lightning.models.optim import build_optimizer
from mole_lightning.utils.config_upgrade import upgrade_config


class TunedModule(pl.LightningModule):
    """Base of ``GlueModule`` and ``GenerationModule``; subclasses set ``self.encoder`` (a
    ``TunedEncoder``).

    Checkpoints hold only what trains (method parameters, the task head, frozen method
    buffers and the method's structure, e.g. the experts MoLE kept after pruning) plus the
    config; frozen backbone weights are left out, also where another module holds them
    (``head.pooling=pooler`` puts the backbone's pooler in the head). Loading one
    rebuilds the pre-trained backbone from its source and puts the trained weights on it.
    A checkpoint written before a key was renamed (``method.head_pooling``, now
    ``head.pooling``) loads too: its saved nodes are read under today's names
    (``upgrade_config``) and saved that way from then on.

    Args:
        task, method, backbone, optim: the config nodes of the run (saved as hparams).
        default_mode: ``max`` or ``min``, when ``task.mode`` is not set.
        head: the ``head`` node (saved when given).
    """

    def __init__(
        self,
        task: DictConfig,
        method: DictConfig,
        backbone: DictConfig,
        optim: DictConfig,
        default_mode: str,
        head: DictConfig | None = None,
    ) -> None:
        super().__init__()
        nodes = {"task": task, "method": method, "backbone": backbone, "optim": optim}
        if head is not None:
            nodes["head"] = head
        self.save_hyperparameters(
            upgrade_config(
                {
                    k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) else v
                    for k, v in nodes.items()
                }
            )
        )
        self.strict_loading = False
        self.monitor = self.hparams.task["monitor"]
        self.lr_schedule = {"start": 0, "fresh": False, "steps": None, "optim": {}}
        self.end_epoch_early = False
        mode = self.hparams.task.get("mode", default_mode)
        self.best_score = MaxMetric() if mode == "max" else MinMetric()

    def config_node(self, name: str) -> DictConfig:
        """A saved config node (``task``, ``method``, ``backbone``, ``optim``, ``head``;
        an empty one when the run saved no such node)."""
        return OmegaConf.create(self.hparams.get(name, {}))

    def restart_lr_schedule(
        self, step: int, fresh: bool, epochs: int | None = None, optim: dict | None = None
    ) -> None:
        """Makes the next ``configure_optimizers`` start at ``step``: a fresh warmup/decay
        over the remaining steps (or over ``epochs`` full epochs, a phase's own length,
        counted once the trainer knows an epoch's batches), or the original schedule
        continued; ``optim`` overrides ``optim`` values (a phase's own schedule)."""
        self.lr_schedule = {"start": step, "fresh": fresh, "steps": None, "optim": optim or {}}
        if epochs is not None:
            self.lr_schedule["epochs"] = epochs

    def optimizer_settings(self) -> dict:
        """The ``optim`` values the optimizer is built with (the run's, then the
        schedule's overrides)."""
        return {**self.hparams.optim, **self.lr_schedule.get("optim", {})}

    def configure_optimizers(self):
        trainer = self.trainer
        total = trainer.estimated_stepping_batches
        epochs = self.lr_schedule.pop("epochs", None)
        if epochs is not None:  # a phase of full epochs: its steps, capped by max_steps
            per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
            steps = epochs * per_epoch
            if trainer.max_steps != -1:
                steps = min(steps, trainer.max_steps - self.lr_schedule["start"])
            self.lr_schedule["steps"] = steps
        schedule = self.lr_schedule
        if schedule.get("steps") is not None:
            total = schedule["start"] + schedule["steps"]
        return build_optimizer(
            self,
            self.optimizer_settings(),
            total,
            schedule_start=schedule["start"],
            fresh_schedule=schedule["fresh"],
        )

    def on_train_batch_start(self, batch, batch_idx: int) -> int | None:
        """Returns -1 (Lightning skips the rest of the epoch) while ``end_epoch_early`` is
        set: MoLE's exploration ends after its last step, and a retrain phase of its own
        epochs starts with the epoch after the prune."""
        return -1 if self.end_epoch_early else None

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """Steps the schedule, except after a batch skipped by ``end_epoch_early``
        (Lightning calls this for it too): the schedule counts optimizer steps."""
        if not self.end_epoch_early:
            super().lr_scheduler_step(scheduler, metric)

    def on_train_start(self) -> None:
        counts = parameter_counts(self)
        rank_zero_info(
            f"trainable parameters: {counts['params/trainable']:,} of {counts['params/total']:,} "
            f"({100 * counts['params/trainable'] / counts['params/total']:.3f}%) — method {self.encoder.method}"
        )
        if self.trainer.global_step == 0:  # a resumed run logged them in its first attempt
            for logger in self.loggers:
                logger.log_metrics(counts, step=0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trained = {n for n, p in self.named_parameters() if p.requires_grad}
        backbone = {t.data_ptr() for t in self.encoder.backbone.state_dict().values() if t.numel()}
        checkpoint["state_dict"] = {
            k: v
            for k, v in checkpoint["state_dict"].items()
            if k in trained
            or not (k.startswith("encoder.backbone.") or (v.numel() and v.data_ptr() in backbone))
        }
        checkpoint["lr_schedule"] = dict(self.lr_schedule)
        if self.best_score.update_count:  # the running best of the monitored metric
            checkpoint["monitor_best"] = self.best_score.compute().detach().cpu()
        checkpoint["method_structure"] = {
            name: part.structure
            for name, part in self.encoder.parts.items()
            if hasattr(part, "structure")
        }

    def restore_best_score(self, checkpoint: dict) -> None:
        """Puts back the running best of the monitored metric (``<monitor>_best``, logged
        after each validation), so a resumed run goes on from the best before the
        interruption instead of from its first validation after it."""
        best = saved_best_score(checkpoint, self.monitor)
        self.best_score.reset()
        if best is not None:
            self.best_score.update(torch.as_tensor(best, device=self.best_score.device))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.lr_schedule = dict(checkpoint.get("lr_schedule", self.lr_schedule))
        self.restore_best_score(checkpoint)
        for name, structure in checkpoint.get("method_structure", {}).items():
            self.encoder.parts[name].restructure(structure)
        expected = {n for n, p in self.named_parameters() if p.requires_grad}
        missing = expected - set(checkpoint["state_dict"])
        if missing:
            raise KeyError(f"checkpoint lacks trained parameters: {sorted(missing)[:5]} ...")


def saved_best_score(checkpoint: dict, monitor: str):
    """The running best of ``monitor`` a checkpoint holds (a scalar tensor), else ``None``:
    its ``monitor_best``, or for a checkpoint from before that key the best score of the
    ``ModelCheckpoint`` that watched the same metric."""
    if checkpoint.get("monitor_best") is not None:
        return checkpoint["monitor_best"]
    for key, state in checkpoint.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and state.get("monitor") == monitor:
            return state.get("best_model_score")
    return None


def parameter_counts(module: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts."""
    return {
        "params/trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "params/total": sum(p.numel() for p in module.parameters()),
    }
