"""MoLE's exploration and retraining as two ``Trainer.fit`` calls, with the prune between.

``fit_mole`` is how ``train`` fits ``method=mole``:

1. **Explore.** A Trainer with the run's settings fits the model (from the run's
   checkpoint on a resume). ``PruneExperts`` saves step ``prune.after_steps`` as
   ``last.ckpt`` and ends the fit there (a run shorter than that never prunes).
2. **Prune** (``start_retrain``). The model is restored from that checkpoint; the
   importance table the rule reads is written (``mole_importance_at_prune``); the rule
   keeps its experts (re-initialised with ``retrain=scratch``); the optimizer state of
   the kept parameters carries over (``retrain=continue``). ``last.ckpt`` is rewritten as
   the retrain phase's start: the pruned model (``mole_structure.json``), its optimizer
   and learning-rate schedule, ``PruneExperts``' state (the step of the prune, where a
   ``prune.retrain_phase`` starts), and no best-checkpoint record: the exploration's best
   checkpoints are deleted, the pruned model cannot load them.
3. **Retrain.** A second Trainer fits from ``last.ckpt``: the run's settings, or with a
   ``retrain_phase`` its own epochs and batch size.

A run resumed in either phase goes on there (``PruneExperts``' state in its checkpoint
says which), also when it stopped between the two fits. Both fits log through the run's
loggers: one ``metrics.csv``, one W&B run. At the end the final importance table is
written (``mole_importance``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

from mole_lightning.core.paths import run_dir
from mole_lightning.errors import CheckpointError, ConfigError
from mole_lightning.methods.mole import MoleAdapters
from mole_lightning.methods.mole.callbacks import (
    PruneExperts,
    adapter_equivalent,
    export_importance,
    last_checkpoint,
    mole_part,
    prune_plan,
)
from mole_lightning.methods.mole.config import MoleConfig
from mole_lightning.models.optim import build_optimizer
from mole_lightning.models.tuned_module import parameter_counts
from mole_lightning.reporting.export import log_structure_to_wandb, log_table_to_wandb
from mole_lightning.utils.checkpoint_callbacks import random_states, set_random_states
from mole_lightning.utils.checkpoint_io import load_checkpoint

MakeTrainer = Callable[..., pl.Trainer]
"""``make_trainer(**limits)``: a new Trainer of the run (its callbacks and loggers), with
``limits`` (e.g. ``max_epochs``) in place of the configured ones."""


def fit_mole(
    config: MoleConfig,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    ckpt_path: str | None,
    make_trainer: MakeTrainer,
) -> pl.Trainer:
    """Fits a MoLE model through its phases; returns the Trainer of the last fit.

    Args:
        config: the run's MoLE options (``prune``).
        ckpt_path: the checkpoint to resume from (``None``: a new run).
        make_trainer: builds each phase's Trainer.

    Raises:
        CheckpointError: ``ckpt_path`` stands between the prune and the retrain phase in
            a layout an earlier version wrote (see ``retrain_state``).
    """
    plan = prune_plan(config)
    resumed = Path(ckpt_path) if ckpt_path is not None else None
    if plan is None or resumed is None or retrain_state(resumed, plan) is None:
        explore = make_trainer()
        explore.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if plan is None:
            export_final_importance(explore, model)
            return explore
        # rank 0 reads where the exploration ended, before anything rewrites it
        end = exploration_end(explore, plan, resumed) if explore.is_global_zero else None
        explored = explore.strategy.broadcast(end)
        if explored is None:  # the run ended before the prune
            export_final_importance(explore, model)
            return explore
        resumed = start_retrain(explore, model, plan, explored)
    else:
        explore = None
    state = retrain_state(resumed, plan)
    limits = {}
    if plan.phase is not None and state["phase_start"] is not None:
        set_train_batch_size(datamodule, plan.phase.batch_size)
        limits["max_epochs"] = state["phase_start"]["epoch"] + plan.phase.epochs
    retrain = make_trainer(**limits)
    if explore is not None:
        continue_measures(explore, retrain)
    retrain.fit(model, datamodule=datamodule, ckpt_path=str(resumed), weights_only=True)
    export_final_importance(retrain, model)
    return retrain


def phase_state(checkpoint: dict[str, Any], plan: PruneExperts) -> dict[str, Any]:
    """``PruneExperts``' state in ``checkpoint`` (exploring when it has none)."""
    state = checkpoint.get("callbacks", {}).get(plan.state_key)
    return dict(state) if state else {"pruned_at": None, "phase_start": None}


def retrain_state(path: Path, plan: PruneExperts) -> dict[str, Any] | None:
    """``PruneExperts``' state when the checkpoint at ``path`` is in the retrain phase,
    else ``None`` (exploring).

    Raises:
        CheckpointError: the checkpoint was pruned for a ``retrain_phase`` that had not
            started: an earlier version saved that state with the exploration's optimizer
            state, which the pruned model cannot load.
    """
    state = phase_state(load_checkpoint(path), plan)
    if state["pruned_at"] is None:
        return None
    if plan.phase is not None and state["phase_start"] is None:
        raise CheckpointError(
            f"{path}: saved by an earlier version of mole_lightning after MoLE's prune (step "
            f"{state['pruned_at']}) and before its retrain phase (method.prune.retrain_phase) "
            "started; it holds the exploration's optimizer state, which the pruned model "
            "cannot load. Start the run again (the same command with overwrite_run=true), "
            "or resume it from a checkpoint saved before the prune"
        )
    return state


def exploration_end(trainer: pl.Trainer, plan: PruneExperts, resumed: Path | None) -> Path | None:
    """The checkpoint of the exploration's last step, once the exploration has ended:
    the run's ``last.ckpt`` (the fit saved it there) or, when the fit trained nothing,
    the checkpoint it resumed from; ``None`` when the run ended before."""
    for path in (last_checkpoint(trainer).path, resumed):
        if path is None or not path.is_file():
            continue
        checkpoint = load_checkpoint(path)
        explored = checkpoint["global_step"] >= plan.after_steps
        if phase_state(checkpoint, plan)["pruned_at"] is None and explored:
            return path
    return None


def start_retrain(
    trainer: pl.Trainer, model: pl.LightningModule, plan: PruneExperts, explored: Path
) -> Path:
    """Prunes ``model`` as it stands in ``explored`` (the exploration's last step) and
    saves the retrain phase's start as the run's ``last.ckpt``; returns that path.

    The model, the global random states and the exploration's optimizer state come from
    the checkpoint, so a run that stopped between the two fits prunes as an uninterrupted
    one. Every process prunes its model (under DDP each reads the file before rank 0
    replaces it, and the running best is synchronised); rank 0 writes the files.
    """
    checkpoint = load_checkpoint(explored, mmap=False)
    trainer.strategy.barrier("MoLE prune: exploration read")
    step, epoch = int(checkpoint["global_step"]), int(checkpoint["epoch"])
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"], strict=False)
    explored_optimizer = build_optimizer(model, model.optimizer_settings(), 1)["optimizer"]
    explored_optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    folder = run_dir(trainer)
    mole = mole_part(model)
    before = parameter_counts(model)["params/trainable"]
    if trainer.is_global_zero:
        paths = export_importance(folder, mole, "mole_importance_at_prune", step)
        log_table_to_wandb(trainer, "mole/importance_at_prune", paths)
    set_random_states(checkpoint["random_states"])  # scratch draws as the run would
    structure = prune(model, plan)
    # counting what method=adapter would train builds one: its init draws random numbers
    # here, as the earlier single-fit version did, so the retrain phase draws the same
    equivalent = adapter_equivalent(model, mole.cfg.bottleneck)
    if plan.phase is None:
        model.restart_lr_schedule(step, fresh=plan.reset_lr_schedule)
        phase_start = None
    else:
        model.restart_lr_schedule(step, True, plan.phase.epochs, phase_schedule(plan))
        phase_start = {"epoch": epoch + 1, "step": step}
    built = build_optimizer(model, model.optimizer_settings(), 1)
    optimizer = built["optimizer"]
    if plan.retrain == "continue":  # the kept parameters keep their Adam moments
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p in explored_optimizer.state:
                    optimizer.state[p] = explored_optimizer.state[p]
    checkpoint["state_dict"] = model.state_dict()
    model.on_save_checkpoint(checkpoint)  # what trains, the structure, the lr schedule
    checkpoint["optimizer_states"] = [optimizer.state_dict()]
    checkpoint["lr_schedulers"] = [built["lr_scheduler"]["scheduler"].state_dict()]
    checkpoint["random_states"] = random_states()
    best = [
        Path(p)
        for key, state in checkpoint.get("callbacks", {}).items()
        if key.startswith("ModelCheckpoint")
        for p in state.get("best_k_models", {})
    ]
    checkpoint["callbacks"] = {
        key: state
        for key, state in checkpoint.get("callbacks", {}).items()
        if not key.startswith("ModelCheckpoint")  # the pruned model starts a new record
    }
    checkpoint["callbacks"][plan.state_key] = {"pruned_at": step, "phase_start": phase_start}
    last = last_checkpoint(trainer).path
    trainer.strategy.save_checkpoint(checkpoint, last)
    after = parameter_counts(model)["params/trainable"]
    if trainer.is_global_zero:
        for path in best:
            if path.parent == last.parent and path != last:
                path.unlink(missing_ok=True)
        record = {
            "pruned_at_step": step,
            "rule": plan.rule,
            "top_k": plan.top_k,
            "graph_layers": plan.graph_layers,
            "structure": structure,
        }
        (folder / "mole_structure.json").write_text(json.dumps(record, indent=2))
        # the kept structure, instead of gate weights that stay constant from here
        log_structure_to_wandb(trainer, "mole/structure", structure, mole.expert_names)
    kept = (
        f"top-{plan.top_k} per layer"
        if plan.rule == "per_layer"
        else f"graph experts in {plan.graph_layers} layers ({plan.rule}), mlp elsewhere"
    )
    rank_zero_info(
        f"MoLE pruned at step {step} (epoch {epoch}) to {kept}: {structure}; trainable "
        f"parameters {before:,} -> {after:,} (method=adapter at bottleneck "
        f"{mole.cfg.bottleneck}: {equivalent:,})"
    )
    for logger in trainer.loggers:
        logger.log_metrics({"params/trainable_after_prune": after}, step=step)
    trainer.strategy.barrier("MoLE prune: retrain start saved")
    return last


def prune(model: pl.LightningModule, plan: PruneExperts) -> list[list[str]]:
    """Keeps the experts ``plan.rule`` picks in ``model`` (a fresh model of that
    structure, head too, with ``retrain=scratch``); returns the kept structure."""
    mole = mole_part(model)
    if plan.rule == "graph_layers":
        structure = mole.prune_to_graph_layers(plan.graph_layers, ranking="authors")
    elif plan.rule == "graph_layers_softmax":
        structure = mole.prune_to_graph_layers(plan.graph_layers, ranking="softmax")
    else:
        structure = mole.prune(plan.top_k)
    if plan.retrain == "scratch":
        mole.remove()
        model.encoder.parts["mole"] = MoleAdapters.attach(
            model.encoder.backbone, mole.cfg, structure
        )
        model.reset_head()
    return structure


def phase_schedule(plan: PruneExperts) -> dict[str, Any]:
    """The ``optim`` overrides of a retrain phase: linear decay, its own warmup."""
    assert plan.phase is not None
    overrides: dict[str, Any] = {"schedule": "linear"}
    if plan.phase.warmup_ratio is not None:
        overrides.update(warmup_ratio=plan.phase.warmup_ratio, warmup_steps=None)
    return overrides


def set_train_batch_size(datamodule: pl.LightningDataModule, batch_size: int | None) -> None:
    """Sets the data module's training batch size (``None``: unchanged).

    Raises:
        ConfigError: the data module has no ``train_batch_size``.
    """
    if batch_size is None:
        return
    if not hasattr(datamodule, "train_batch_size"):
        raise ConfigError(
            "prune.retrain_phase.batch_size needs a data module with a train_batch_size "
            f"attribute; {type(datamodule).__name__} has none"
        )
    datamodule.train_batch_size = batch_size


def continue_measures(previous: pl.Trainer, trainer: pl.Trainer) -> None:
    """Measures of the whole attempt (training throughput) go on across the phases: each
    callback of ``trainer`` with ``continue_from`` takes over its like in ``previous``."""
    for callback in trainer.callbacks:
        earlier = [c for c in previous.callbacks if type(c) is type(callback)]
        if earlier and hasattr(callback, "continue_from"):
            callback.continue_from(earlier[0])


def export_final_importance(trainer: pl.Trainer, model: pl.LightningModule) -> None:
    """Writes ``mole_importance.{json,csv,png}`` (pruned experts blank) and logs it to W&B."""
    if trainer.is_global_zero:
        paths = export_importance(
            run_dir(trainer), mole_part(model), "mole_importance", trainer.global_step
        )
        log_table_to_wandb(trainer, "mole/importance", paths)
