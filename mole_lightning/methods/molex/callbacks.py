"""MoLEx's interpretable output: which layer each layer picks over the dev set."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn

from mole_lightning.core.paths import run_dir
from mole_lightning.reporting.export import export_table, log_table_to_wandb


def shown_model(trainer: pl.Trainer) -> str:
    """Which model a validation ran: ``checkpoint <file> (step <k>)`` when a checkpoint
    was loaded to validate it (the best one, re-validated at the end), else ``step <k>``
    of the training run."""
    if trainer.state.fn == TrainerFn.VALIDATING and trainer.ckpt_path:
        return f"checkpoint {Path(trainer.ckpt_path).name} (step {trainer.global_step})"
    return f"step {trainer.global_step}"


class LayerSelectionExport(Callback):
    """Counts the routers' choices over each full dev pass and writes
    ``molex_selection.{json,csv,png}`` (a T × T table: row = routed layer, column = chosen
    layer, cells = selection frequency; ``counts`` holds the raw counts and
    ``dropped_routes`` the choices ``dispatch="capacity"`` could not serve) into the run
    directory, then logs it to W&B; with capacity dispatch it also logs
    ``molex/dropped_fraction``. Counts are summed over DDP ranks."""

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.encoder.parts["molex"].reset_selection_counts()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        routing = pl_module.encoder.parts["molex"]
        counts = trainer.strategy.reduce(
            routing.selection_counts.clone().float(), reduce_op="sum"
        ).cpu()
        dropped = trainer.strategy.reduce(
            routing.dropped_routes.clone().float(), reduce_op="sum"
        ).cpu()
        if routing.cfg.dispatch == "capacity":
            fraction = dropped.sum() / counts.sum().clamp(min=1)
            pl_module.log("molex/dropped_fraction", fraction, on_epoch=True, batch_size=1)
        if not trainer.is_global_zero:
            return
        totals = counts.sum(dim=1, keepdim=True)
        frequencies = torch.where(
            totals > 0, counts / totals.clamp(min=1), torch.full_like(counts, float("nan"))
        )
        names = [f"layer {i}" for i in range(counts.shape[0])]
        shown = shown_model(trainer)
        paths = export_table(
            run_dir(trainer),
            "molex_selection",
            frequencies,
            names,
            names,
            title=f"MoLEx layer selection frequency on the dev set ({shown})",
            axis_names=("routed layer", "chosen layer"),
            extra={
                "step": trainer.global_step,
                "model": shown,
                "counts": counts.long().tolist(),
                "routed_layers": routing.routed_layers,
                "dropped_routes": dropped.long().tolist(),
            },
        )
        log_table_to_wandb(trainer, "molex/selection", paths)
