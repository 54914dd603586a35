"""Training entry point: ``python train.py task=sst2 method=mole`` (Hydra composes ``conf/``)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, EarlyStopping, LearningRateMonitor
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from mole_lightning.callbacks.progress import ProgressLog
from mole_lightning.callbacks.throughput import TrainThroughput
from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.data.custom import resolve_task
from mole_lightning.data.datamodule import GlueDataModule
from mole_lightning.errors import ConfigError, reported_as_exit
from mole_lightning.methods import method_callbacks, method_config
from mole_lightning.methods.molex import MolexConfig
from mole_lightning.models.config_store import register_conf
from mole_lightning.models.glue_module import GlueModule
from mole_lightning.models.tuned_module import parameter_counts
from mole_lightning.resources import MissingResourcesError, check_resources
from mole_lightning.utils.checkpoint_callbacks import (
    LAST,
    RandomStates,
    RestoreLoaderPosition,
    ValidateLastStep,
    build_checkpoint_callbacks,
)
from mole_lightning.utils.checkpoint_io import AtomicCheckpointIO, resume_checkpoint
from mole_lightning.utils.config_types import check_option_types
from mole_lightning.utils.console import (
    PlainModelSummary,
    on_terminal,
    progress_bars_off,
    silence_known_noise,
)
from mole_lightning.utils.loggers import build_loggers, finish_wandb
from mole_lightning.utils.resume import resume_config
from mole_lightning.utils.run_dir import claimed_run_dir, resumes_in
from mole_lightning.utils.run_info import METRICS, finish_run, start_run

TRAINER_EXTRA_KEYS = ("compile",)
log = logging.getLogger(__name__)
register_conf()  # the method and head options and the resolvers conf/train.yaml needs


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path | None = None) -> str | None:
    """The checkpoint file to fit from, checked to load whole and safely
    (``load_checkpoint``), or ``None``.

    Args:
        ckpt_path: a checkpoint file, or a run directory (``resume_config`` has made that
            run's folder and config this run's): its ``checkpoints/last.ckpt``.
        output_dir: the run's folder. A resume of its own ``last.ckpt`` that is damaged
            or missing falls back to the newest whole checkpoint there, with a warning.

    Raises:
        ConfigError: nothing at ``ckpt_path``.
        CheckpointError: the checkpoint is damaged (and there is no whole one to fall
            back to) or holds more than tensors and plain values (refused unloaded).
    """
    if ckpt_path is None:
        return None
    path = Path(ckpt_path)
    if path.is_dir():
        folder = path / "checkpoints"
        if not any(folder.glob("*.ckpt")):
            raise ConfigError(f"ckpt_path={ckpt_path!r}: no checkpoint in {folder}")
        return str(resume_checkpoint(folder / LAST, fall_back=True))
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r}: no such run folder or checkpoint file")
    own = output_dir is not None and resumes_in(path, output_dir)
    return str(resume_checkpoint(path, fall_back=own and path.name == LAST))


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """Checkpointing, validation at the last step, LR monitor, progress log lines, optional
    early stopping, and the method's own callbacks."""
    node = cfg.callbacks
    callbacks: list[Callback] = [
        *build_checkpoint_callbacks(node.model_checkpoint),
        ValidateLastStep(),
        RandomStates(),
        RestoreLoaderPosition(),
    ]
    if node.get("lr_monitor") and cfg.get("logger"):
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if node.get("progress_log_seconds") is not None:
        callbacks.append(ProgressLog(node.progress_log_seconds))
    if node.early_stopping.enabled:
        es = node.early_stopping
        callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode, patience=es.patience))
    callbacks.extend(method_callbacks(method_config(cfg.method), cfg))
    callbacks.append(TrainThroughput())  # throughput.json: training samples/s
    return callbacks


def build_datamodule(cfg: DictConfig, model: pl.LightningModule) -> pl.LightningDataModule:
    """The task's data module; graph methods get word graphs parsed by ``cfg.parser``."""
    kind = cfg.task.get("kind", "glue")
    if kind in ("glue", "custom"):
        kinds = model.encoder.graph_kinds if model.needs_graphs else None
        return GlueDataModule(
            model.spec,
            cfg.data,
            cfg.backbone,
            cfg.paths.cache_dir,
            parser=cfg.get("parser"),
            graph_kinds=kinds,
        )
    if kind == "generation":
        from mole_lightning.data.e2e_datamodule import E2EDataModule

        return E2EDataModule(
            cfg.data,
            cfg.backbone,
            cfg.paths.cache_dir,
            eval_max_mrs=cfg.task.get("eval_max_mrs"),
            generation_batch_size=cfg.task.generation_batch_size,
        )
    raise ConfigError(
        f"task kind {kind!r} of task {cfg.task.name!r} is not supported; valid kinds: glue, "
        "custom, generation"
    )


def build_module(cfg: DictConfig) -> pl.LightningModule:
    """The LightningModule of the task's kind (a custom task's with its labels resolved:
    ``resolve_task``)."""
    if cfg.task.get("kind", "glue") == "generation":
        from mole_lightning.models.generation_module import GenerationModule

        if cfg.trainer.get("compile"):
            raise ConfigError(
                "trainer.compile is not supported for generation tasks: beam search grows "
                "the sequence every step, so the compiled model would recompile for each "
                "length; drop trainer.compile"
            )
        return GenerationModule(cfg.task, cfg.method, cfg.backbone, cfg.optim)
    return GlueModule(
        resolve_task(cfg.task, cfg.data), cfg.method, cfg.backbone, cfg.optim, cfg.head
    )


def is_launch_rank_zero() -> bool:
    """Whether this process is global rank 0, read from the launcher's environment
    (Lightning's DDP launcher, torchrun, SLURM) so it is known before the Trainer exists."""
    return all(
        int(os.environ.get(k, "0")) == 0
        for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    )


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_ddp_launch(trainer_kwargs: dict) -> None:
    """Refuses Lightning's script-relaunching DDP inside a Hydra multirun.

    That launcher starts each worker with this process's command line, which in a
    multirun is the whole sweep (``-m`` and every swept value): the workers would run
    other jobs into other directories. torchrun (every rank runs the sweep in lockstep)
    and ``ddp_spawn`` (workers forked from the job) do not re-run the command line.

    Raises:
        ConfigError: multirun + ``trainer.strategy=ddp*`` on several devices, launched by Lightning.
    """
    strategy = str(trainer_kwargs.get("strategy", ""))
    relaunches = strategy.startswith("ddp") and not any(
        s in strategy for s in ("spawn", "fork", "notebook")
    )
    several = (
        trainer_kwargs.get("devices", 1) not in (1, "1") or trainer_kwargs.get("num_nodes", 1) != 1
    )
    external = (
        torch.distributed.is_torchelastic_launched() or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    )
    if relaunches and several and not external and in_multirun():
        raise ConfigError(
            f"trainer.strategy={strategy} in a Hydra multirun: Lightning's DDP launcher would re-run "
            "the whole sweep in every worker. Use trainer.strategy=ddp_spawn (or "
            "ddp_spawn_find_unused_parameters_true), or launch the sweep with torchrun: "
            "`torchrun --nproc_per_node=N train.py -m hydra.sweep.dir=DIR ...` (docs/experiments.md)"
        )


def check_cpu_devices(trainer_kwargs: dict) -> None:
    """Warns when a CPU run asks for more processes (``trainer.devices``) than this
    process may use cores: each DDP process then shares cores, and the run is slower."""
    accelerator = trainer_kwargs.get("accelerator", "auto")
    devices = trainer_kwargs.get("devices", 1)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if on_cpu and isinstance(devices, int) and devices > (cores or 1):
        rank_zero_warn(
            f"trainer.devices={devices} on CPU with {cores} core(s): {devices} processes share "
            f"them and the run is slower than with trainer.devices={cores}"
        )


def build_trainer(
    cfg: DictConfig, callbacks: list[Callback], loggers: list, **limits
) -> pl.Trainer:
    """The run's Trainer (``cfg.trainer``; ``limits``, e.g. a phase's ``max_epochs``,
    replace configured values)."""
    kwargs = {
        k: v
        for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items()
        if k not in TRAINER_EXTRA_KEYS
    }
    kwargs.update(limits)
    check_ddp_launch(kwargs)
    check_cpu_devices(kwargs)
    silence_known_noise()
    if kwargs.get("enable_progress_bar", True) and not on_terminal():
        # a bar's frames in a log file are noise; ProgressLog writes progress lines
        kwargs["enable_progress_bar"] = False
        rank_zero_info(
            "stdout is not a terminal: no progress bar; progress lines every "
            f"{cfg.callbacks.get('progress_log_seconds')} s (callbacks.progress_log_seconds)"
        )
    if kwargs.pop("enable_model_summary", True):
        callbacks = [*callbacks, PlainModelSummary()]
    return pl.Trainer(
        **kwargs,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=cfg.paths.output_dir,
        plugins=[AtomicCheckpointIO()],  # checkpoint files whole or not at all
        enable_model_summary=False,  # PlainModelSummary instead (mole_lightning.utils.console)
    )


def fit_model(
    cfg: DictConfig,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    make_trainer: Callable[..., pl.Trainer],
    ckpt_path: str | None = None,
) -> pl.Trainer:
    """Fits ``model`` from ``ckpt_path``: one ``Trainer.fit``, or MoLE's phases
    (``callbacks.mole_phases``); returns the Trainer of the last fit.

    Args:
        make_trainer: ``make_trainer(**limits)``, a new Trainer of the run (``build_trainer``).
    """
    config = method_config(cfg.method)
    if config.runs_in_phases():
        from mole_lightning.callbacks.mole_phases import fit_mole

        return fit_mole(config, model, datamodule, ckpt_path, make_trainer)
    trainer = make_trainer()
    # weights_only: Lightning's torch.load refuses a payload (checked already, and
    # never left to the TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD environment variable)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Trains and evaluates one configuration; returns the final metrics.

    Leaves in ``cfg.paths.output_dir``: ``resolved_config.yaml``, ``run_info.json``
    (status, versions, git commit), ``metrics.json`` (dev metrics and the final
    ``params/trainable`` / ``params/total``), ``checkpoints/`` and whatever the method's
    callbacks export (heatmaps, tables). Under DDP only global rank 0 writes the run files.

    The checkpoint to fit from is checked (whole, safe) before anything is written, and
    rank 0 holds the folder (``claimed_run_dir``) for the whole run: a second attempt at
    once, or a new run into a folder holding another run's files, is refused. Then every
    resource the run needs (backbone weights, data, parser models, a W&B login) is
    checked before anything is loaded, and all missing ones are reported at once
    (``check_resources``; the run is recorded as failed). The run's folder is logged at
    the start and at the end.
    """
    check_option_types(cfg)
    silence_known_noise()
    if not on_terminal():
        progress_bars_off()
    output_dir = Path(cfg.paths.output_dir)
    rank_zero_info(f"run folder: {output_dir}")
    writes_run_files = is_launch_rank_zero()
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    if not writes_run_files:
        return run_training(cfg, output_dir, ckpt_path, writes_run_files)
    with claimed_run_dir(output_dir, ckpt_path, bool(cfg.get("overwrite_run"))):
        return run_training(cfg, output_dir, ckpt_path, writes_run_files)


def run_training(
    cfg: DictConfig, output_dir: Path, ckpt_path: str | None, writes_run_files: bool
) -> dict[str, float]:
    """``train`` once the run's folder is claimed: fits from ``ckpt_path`` (a checked
    file or ``None``), validates, records the run's status and metrics (rank 0)."""
    if cfg.get("threads") is not None:
        torch.set_num_threads(int(cfg.threads))
    info = start_run(cfg, output_dir) if writes_run_files else {}
    try:
        check_resources(cfg)
        if cfg.get("seed") is not None:
            pl.seed_everything(cfg.seed, workers=True)
        model = build_module(cfg)
        datamodule = build_datamodule(cfg, model)
        if cfg.trainer.get("compile"):
            if not cfg.data.get("pad_to_max_length"):
                rank_zero_warn(
                    "trainer.compile with data.pad_to_max_length=false: every new batch "
                    "shape compiles again; set data.pad_to_max_length=true for static shapes"
                )
            config = method_config(cfg.method)
            if isinstance(config, MolexConfig) and config.dispatch != "capacity":
                rank_zero_warn(
                    "trainer.compile with method=molex and method.dispatch=grouped: the "
                    "graph breaks at every routed layer; method.dispatch=capacity is static"
                )
            model.encoder.compile_backbone(cfg.trainer.compile)
        loggers = build_loggers(cfg, output_dir, ckpt_path, info.get("wandb_id"))
        trainer = fit_model(
            cfg,
            model,
            datamodule,
            lambda **limits: build_trainer(cfg, build_callbacks(cfg), loggers, **limits),
            ckpt_path,
        )
        validate_last_step(trainer, model, datamodule, cfg)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best_path = (
            trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        )
        if cfg.get("validate_best") and best_path and not cfg.trainer.get("fast_dev_run"):
            best = trainer.validate(
                model,
                datamodule=datamodule,
                ckpt_path=best_path,
                verbose=False,
                weights_only=True,
            )
            metrics.update(
                {f"best/{k}": float(v) for k, v in best[0].items() if not k.endswith("_best")}
            )
        tests = isinstance(datamodule, GlueDataModule) and "test" in datamodule.splits
        if tests and not cfg.trainer.get("fast_dev_run"):
            # the test split once, with the best checkpoint (else the final weights)
            tested = trainer.test(
                model,
                datamodule=datamodule,
                ckpt_path=best_path or None,
                verbose=False,
                weights_only=True,
            )
            metrics.update({k: float(v) for k, v in tested[0].items()})
        metrics["global_step"] = trainer.global_step
        metrics.update(parameter_counts(model))
    except BaseException as err:
        # Ctrl-C and SIGTERM (Lightning raises SystemExit for both) interrupt a run
        status = "failed" if isinstance(err, Exception) else "interrupted"
        log_failure(status, err)
        if writes_run_files:
            finish_run(output_dir, info, status, error=f"{type(err).__name__}: {err}")
        rank_zero_info(f"run folder ({status}): {output_dir}")
        raise
    if writes_run_files:
        if resumes_in(ckpt_path, output_dir):
            # a resume that trained no further (a finished run) logs no train/loss or lr:
            # the values of the attempts before it stay
            metrics = {**earlier_metrics(output_dir), **metrics}
        finish_run(output_dir, info, "finished", metrics)
        finish_wandb(trainer.loggers, metrics)
    print_metrics(metrics, cfg.task.monitor)
    rank_zero_info(f"run folder: {output_dir}")
    return metrics


def log_failure(status: str, err: BaseException) -> None:
    """Logs why a run stopped. The list of missing resources goes to the log files only
    (the run's ``train.log``): the console shows it once, as the command's ``error:``."""
    text = f"run {status}: {type(err).__name__}: {err}"
    if not isinstance(err, MissingResourcesError):
        log.error(text)
        return
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, text, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)


def earlier_metrics(output_dir: Path) -> dict:
    """The run's ``metrics.json`` from an earlier attempt (empty when missing or unreadable)."""
    try:
        metrics = json.loads((output_dir / METRICS).read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def validate_last_step(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule, cfg: DictConfig
) -> None:
    """Validates the final weights when fitting ended after its latest validation
    (``ValidateLastStep`` covers ``max_steps``; this covers e.g. a last epoch that
    ``check_val_every_n_epoch`` skips)."""
    (final,) = [c for c in trainer.callbacks if isinstance(c, ValidateLastStep)]
    if final.validated_step == trainer.global_step or cfg.trainer.get("fast_dev_run"):
        return
    rank_zero_info(
        f"last validation at step {final.validated_step}, training ended at step "
        f"{trainer.global_step}: validating the final weights"
    )
    trainer.validate(model, datamodule=datamodule, verbose=False)


def print_metrics(metrics: dict[str, float], monitor: str) -> None:
    """Prints the dev (and test) metrics, the monitored one first."""
    shown = [k for k in metrics if k.startswith(("val/", "best/", "test/"))]
    shown.sort(key=lambda k: (k != monitor, k))
    heading = "dev and test metrics" if any(k.startswith("test/") for k in shown) else "dev metrics"
    rank_zero_info(f"{heading}:\n" + "\n".join(f"  {k:<28} {metrics[k]:.4f}" for k in shown))


def route_lightning_logs() -> None:
    """Sends Lightning's log lines (ours go through ``rank_zero_info`` too) to the root
    logger, whose handlers the command line set up: the console and the run's
    ``train.log`` (Hydra's for ``train.py``; ``scripts/evidence.py``'s, one per cell).

    Lightning gives its loggers their own console handler and stops propagation when it
    is imported before logging is configured, which kept them out of ``train.log``.
    Python warnings go to ``train.log`` too (``log_warnings_to_files``).
    """
    if not logging.getLogger().handlers:
        return
    for name in ("pytorch_lightning", "lightning_fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    log_warnings_to_files()


def log_warnings_to_files() -> None:
    """Python warnings (``rank_zero_warn``: the project's, e.g. a MoLE run that never
    prunes, and Lightning's) still print on stderr, and are written to the root logger's
    file handlers too (the run's ``train.log``), which they bypassed. Installed once."""
    shown = warnings.showwarning
    if getattr(shown, "logs_to_files", False):
        return

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        shown(message, category, filename, lineno, file, line)
        text = f"{category.__name__}: {message}"
        record = logging.LogRecord("py.warnings", logging.WARNING, filename, lineno, text, (), None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)

    show.logs_to_files = True
    warnings.showwarning = show


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the monitored metric (for sweepers)."""
    from hydra.core.hydra_config import HydraConfig

    route_lightning_logs()
    # in a multirun, Hydra records a failed job and goes on with the sweep
    with reported_as_exit(reraise=in_multirun()):
        metrics = train(resume_config(cfg, list(HydraConfig.get().overrides.task)))
    return metrics.get(f"best/{cfg.task.monitor}", metrics.get(cfg.task.monitor))


if __name__ == "__main__":
    main()
