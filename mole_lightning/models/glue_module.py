"""The LightningModule for GLUE: a tuned encoder, a task head, the task's official metrics."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric, MinMetric

from mole_lightning.data.glue import get_task
from mole_lightning.methods import build_encoder
from mole_lightning.metrics.glue import glue_metrics
from mole_lightning.models.backbone import load_backbone
from mole_lightning.models.heads import ClassificationHead
from mole_lightning.models.optim import build_optimizer


class GlueModule(pl.LightningModule):
    """Backbone + PEFT method + head, trained on one GLUE task.

    Checkpoints hold only what trains (method parameters, head, and the method's
    structure, e.g. the experts MoLE kept after pruning) plus the config; loading one
    rebuilds the pre-trained backbone from its source and puts the trained weights on it.

    Args:
        task: the ``task`` config node (name, monitor, mode).
        method: the ``method`` config node.
        backbone: the ``backbone`` config node.
        optim: the ``optim`` config node (lr, weight_decay, warmup_ratio, betas, eps).
    """

    def __init__(self, task: DictConfig, method: DictConfig, backbone: DictConfig, optim: DictConfig) -> None:
        super().__init__()
        self.save_hyperparameters(
            {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) else v
             for k, v in {"task": task, "method": method, "backbone": backbone, "optim": optim}.items()}
        )
        self.strict_loading = False
        self.spec = get_task(self.hparams.task["name"])
        cfgs = {k: OmegaConf.create(self.hparams[k]) for k in ("method", "backbone")}
        self.encoder = build_encoder(load_backbone(cfgs["backbone"]), cfgs["method"], cfgs["backbone"])
        self.reset_head()
        self.monitor = self.hparams.task["monitor"]
        self.val_metrics = nn.ModuleList(
            glue_metrics(self.spec).clone(prefix="val/", postfix="" if i == 0 else "_mm")
            for i in range(len(self.spec.dev_splits))
        )
        self.lr_schedule = {"start": 0, "fresh": False}
        self.best_score = MaxMetric() if self.hparams.task.get("mode", "max") == "max" else MinMetric()

    def reset_head(self) -> None:
        """A freshly initialised task head (at build time, and when retraining from scratch)."""
        hidden = self.encoder.backbone.config.hidden_size
        device = next(self.encoder.parameters()).device
        self.head = ClassificationHead(
            hidden, self.spec.num_labels, self.hparams.method.get("head_dropout", 0.1)
        ).to(device)

    def restart_lr_schedule(self, step: int, fresh: bool) -> None:
        """Makes the next ``configure_optimizers`` start at ``step``: a fresh warmup/decay
        over the remaining steps, or the original schedule continued."""
        self.lr_schedule = {"start": step, "fresh": fresh}

    @property
    def needs_graphs(self) -> bool:
        return self.encoder.needs_graphs

    def forward(self, batch: dict) -> torch.Tensor:
        """Returns logits ``[batch, num_labels]`` (scores ``[batch]`` for regression)."""
        hidden = self.encoder(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch.get("word_graphs")
        )
        logits = self.head(hidden)
        return logits.squeeze(-1) if self.spec.is_regression else logits

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.spec.is_regression:
            return F.mse_loss(logits, labels)
        return F.cross_entropy(logits, labels)

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """Class ids ``[batch]`` (or the regression scores)."""
        return logits if self.spec.is_regression else logits.argmax(-1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = self.task_loss(logits, batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(logits))
        aux = self.encoder.aux_loss()
        if aux is not None:
            self.log("train/aux_loss", aux, batch_size=len(logits))
            loss = loss + aux
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch)
        loss = self.task_loss(logits, batch["labels"])
        metrics = self.val_metrics[dataloader_idx]
        metrics.update(self.predictions(logits), batch["labels"])
        suffix = "" if dataloader_idx == 0 else "_mm"
        self.log(f"val/loss{suffix}", loss, batch_size=len(logits), add_dataloader_idx=False, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        for metrics in self.val_metrics:
            self.log_dict(metrics.compute(), prog_bar=True)
            metrics.reset()
        score = self.trainer.callback_metrics.get(self.monitor)
        if score is not None and not self.trainer.sanity_checking:
            self.best_score.update(score)
            self.log(f"{self.monitor}_best", self.best_score.compute(), prog_bar=True)

    def configure_optimizers(self):
        return build_optimizer(
            self, self.hparams.optim, self.trainer.estimated_stepping_batches,
            schedule_start=self.lr_schedule["start"], fresh_schedule=self.lr_schedule["fresh"],
        )

    def on_train_start(self) -> None:
        counts = parameter_counts(self)
        rank_zero_info(
            f"trainable parameters: {counts['params/trainable']:,} of {counts['params/total']:,} "
            f"({100 * counts['params/trainable'] / counts['params/total']:.3f}%) — method {self.encoder.method}"
        )
        for logger in self.loggers:
            logger.log_metrics(counts, step=0)

    # --- checkpoints: trained weights and method structure only ---------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trained = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in trained or not k.startswith("encoder.backbone.")
        }
        checkpoint["lr_schedule"] = dict(self.lr_schedule)
        checkpoint["method_structure"] = {
            name: part.structure for name, part in self.encoder.parts.items() if hasattr(part, "structure")
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.lr_schedule = dict(checkpoint.get("lr_schedule", self.lr_schedule))
        for name, structure in checkpoint.get("method_structure", {}).items():
            self.encoder.parts[name].restructure(structure)
        expected = {n for n, p in self.named_parameters() if p.requires_grad}
        missing = expected - set(checkpoint["state_dict"])
        if missing:
            raise KeyError(f"checkpoint lacks trained parameters: {sorted(missing)[:5]} ...")


def parameter_counts(module: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts."""
    return {
        "params/trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "params/total": sum(p.numel() for p in module.parameters()),
    }
