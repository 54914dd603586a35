"""The LightningModule for GLUE-style tasks (a GLUE task or a custom one): a tuned encoder,
a task head, the task's metrics."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F

from mole_lightning.core.tasks import task_spec
from mole_lightning.methods import build_encoder
from mole_lightning.metrics.glue import glue_metrics
from mole_lightning.models.backbone import load_backbone
from mole_lightning.models.heads import ClassificationHead, HeadConfig, find_pooler
from mole_lightning.models.tuned_module import TunedModule
from mole_lightning.utils.structured import dataclass_from_node


class GlueModule(TunedModule):
    """Backbone + PEFT method + head, trained on one GLUE task or custom task.

    Checkpoints, the optimizer and parameter accounting come from ``TunedModule``.

    Args:
        task: the ``task`` config node (name, monitor, mode; a custom task's resolved node,
            with its labels: ``mole_lightning.data.custom.resolve_task``).
        method: the ``method`` config node.
        backbone: the ``backbone`` config node.
        optim: the ``optim`` config node (lr, weight_decay, warmup_ratio, betas, eps).
        head: the ``head`` config node (``None``: ``HeadConfig``'s defaults, or for a
            checkpoint from before the ``head`` group its ``method.head_*`` values).
    """

    def __init__(
        self,
        task: DictConfig,
        method: DictConfig,
        backbone: DictConfig,
        optim: DictConfig,
        head: DictConfig | None = None,
    ) -> None:
        super().__init__(task, method, backbone, optim, default_mode="max", head=head)
        self.spec = task_spec(self.hparams.task)
        self.head_config = dataclass_from_node(HeadConfig, self.config_node("head"), "head")
        self.encoder = build_encoder(
            load_backbone(self.config_node("backbone")),
            self.config_node("method"),
            self.config_node("backbone"),
        )
        self.reset_head()
        self.val_metrics = nn.ModuleList(
            glue_metrics(self.spec).clone(prefix="val/", postfix="" if i == 0 else "_mm")
            for i in range(len(self.spec.dev_splits))
        )
        self.test_metrics = glue_metrics(self.spec).clone(prefix="test/")

    def reset_head(self) -> None:
        """A freshly initialised task head (at build time, and when retraining from scratch)."""
        hidden = self.encoder.backbone.config.hidden_size
        device = next(self.encoder.parameters()).device
        self.head = ClassificationHead(
            hidden, self.spec.num_labels, self.head_config, find_pooler(self.encoder.backbone)
        ).to(device)

    @property
    def needs_graphs(self) -> bool:
        return self.encoder.needs_graphs

    def forward(self, batch: dict) -> torch.Tensor:
        """Returns logits ``[batch, num_labels]`` (scores ``[batch]`` for regression)."""
        hidden = self.encoder(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("token_type_ids"),
            batch.get("word_graphs"),
        )
        logits = self.head(hidden, batch["attention_mask"])
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
        self.log(
            f"val/loss{suffix}",
            loss,
            batch_size=len(logits),
            add_dataloader_idx=False,
            sync_dist=True,
        )

    def on_validation_epoch_end(self) -> None:
        for metrics in self.val_metrics:
            self.log_dict(metrics.compute(), prog_bar=True)
            metrics.reset()
        score = self.trainer.callback_metrics.get(self.monitor)
        if score is not None and not self.trainer.sanity_checking:
            self.best_score.update(score)
            self.log(f"{self.monitor}_best", self.best_score.compute(), prog_bar=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """The test split (a custom task's ``data.test_file``): ``test/loss`` and the
        task's metrics under ``test/``."""
        logits = self(batch)
        self.test_metrics.update(self.predictions(logits), batch["labels"])
        loss = self.task_loss(logits, batch["labels"])
        self.log("test/loss", loss, batch_size=len(logits), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
