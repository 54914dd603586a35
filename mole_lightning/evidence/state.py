"""Where a protocol cell stands on disk: done, new, to resume, or to run again; and where
each of its evaluations stands: done, to run, or impossible (its checkpoint is gone)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from mole_lightning.analysis.runs import Run, load_run, read_json
from mole_lightning.analysis.table import flatten
from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.evidence.protocol import Evaluation
from mole_lightning.utils.config_upgrade import upgrade_config
from mole_lightning.utils.run_info import METRICS, RUN_INFO

DONE, NEW, RESUME, RERUN = "done", "new", "resume", "rerun"
PENDING, NO_CHECKPOINT = "pending", "no checkpoint"
NO_CHECKPOINT_HELP = (
    "checkpoints stay on the machine that trained the cell: run `python scripts/evidence.py "
    "--evaluate-only` there and commit the cell's eval_*.json, or train the cell again (move "
    "its folder aside, then run the protocol); a finished cell is never trained again by itself"
)
"""What to do about an evaluation whose cell's best checkpoint is gone."""
LOCATION_OPTIONS = ("file",)
"""Suite options that say where the data is on this machine, not what is evaluated."""


@dataclass
class CellState:
    """``kind``: ``done`` (finished with the protocol's config: skipped), ``new`` (no run
    yet), ``resume`` (killed or failed with the same config and a ``last.ckpt``: continue
    from it) or ``rerun`` (anything else: start again); ``reason`` says why; ``run`` is
    what the folder holds (``None`` for a new cell)."""

    kind: str
    reason: str
    run: Run | None = None


def config_differences(
    saved: dict, cfg: DictConfig, may_differ: list[str], overrides: list[str] = ()
) -> list[str]:
    """Resolved-config keys whose value differs between a saved run and ``cfg``, beyond
    the ``may_differ`` prefixes. ``cfg`` goes through the same YAML round trip as
    ``resolved_config.yaml``, so equal values compare equal, and ``saved`` is read under
    today's key names (``upgrade_config``: ``method.head_pooling`` is ``head.pooling``),
    so a run written before a key was renamed is not a changed protocol.

    A key the saved run does not have at all is an option added to the framework since
    it ran: it is not a difference unless one of ``overrides`` (the protocol's
    ``key=value`` overrides) sets it or a node above it, because a new option's default
    keeps the behaviour the run had (the project's rule for new options). An override
    that sets such a key to ``null`` is no difference either: ``null`` is how an option
    spells "as before it existed" (``method.gate_lr=null``: the gates in the run's group),
    which a protocol writes to keep its later cells like its earlier ones when the
    option's default changes. Choosing a config group's option (``method=lora``: a folder
    ``conf/method/``) does not set the options added to that option's file since."""
    expected = flatten(yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True)))
    found = flatten(upgrade_config(saved))
    keys = (o.split("=", 1)[0].lstrip("+~") for o in overrides)
    named = tuple(k for k in keys if not (Path(CONFIG_DIR) / k).is_dir())

    def set_by_protocol(key: str) -> bool:
        return any(key == n or key.startswith(f"{n}.") for n in named)

    return sorted(
        k
        for k in set(expected) | set(found)
        if not k.startswith(tuple(may_differ))
        and expected.get(k) != found.get(k)
        and (k in found or (set_by_protocol(k) and expected.get(k) != repr(None)))
    )


def last_checkpoint(path: Path) -> Path | None:
    ckpt = path / "checkpoints" / "last.ckpt"
    return ckpt if ckpt.is_file() else None


def cell_state(
    path: Path, cfg: DictConfig, may_differ: list[str], overrides: list[str] = ()
) -> CellState:
    """The state of the cell folder ``path`` against the protocol's config ``cfg``
    (composed from ``overrides``)."""
    if not (path / RUN_INFO).is_file():
        return CellState(NEW, "no run yet")
    run = load_run(path)
    if run.read_errors:
        return CellState(RERUN, "; ".join(run.read_errors), run)
    if run.config is None:
        return CellState(RERUN, "no resolved_config.yaml", run)
    changed = config_differences(run.config, cfg, may_differ, overrides)
    if changed:
        shown = ", ".join(changed[:4]) + (" ..." if len(changed) > 4 else "")
        return CellState(RERUN, f"config changed since it ran ({shown})", run)
    if run.status == "finished":
        if run.metrics is None:
            return CellState(RERUN, f"finished without {METRICS}", run)
        return CellState(DONE, "finished with this config", run)
    what = run.unfinished_reason()
    if last_checkpoint(path) is not None:
        return CellState(RESUME, f"{what}; resuming from checkpoints/last.ckpt", run)
    return CellState(RERUN, f"{what}; no checkpoint to resume from", run)


def best_checkpoint(path: Path) -> Path | None:
    """The cell's best checkpoint (``checkpoints/best-<step>.ckpt``, the one its ``best``
    scores come from; the newest when a resumed run left several), or ``None``."""
    found = sorted((path / "checkpoints").glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


@dataclass
class EvaluationState:
    """``kind``: ``done`` (its ``eval_<name>.json`` has the protocol's settings, from the
    best checkpoint: ``result`` holds it), ``pending`` (to run: the checkpoint is here) or
    ``no checkpoint`` (to run, but the best checkpoint is not in the folder); ``reason``
    says why."""

    kind: str
    reason: str
    result: dict | None = None


def settings_differences(evaluation: Evaluation, settings: dict) -> list[str]:
    """Options of ``evaluation`` whose value differs in an eval JSON's ``settings``,
    beyond ``LOCATION_OPTIONS``. As for a cell's config, an option the JSON lacks is one
    added to the suite since it ran: a difference only when the protocol gives it."""
    return sorted(
        k
        for k, value in evaluation.options.items()
        if k not in LOCATION_OPTIONS
        and (k in settings or k in evaluation.given)
        and settings.get(k) != json.loads(json.dumps(value))
    )


def evaluation_state(path: Path, evaluation: Evaluation) -> EvaluationState:
    """Where ``evaluation`` of the finished cell folder ``path`` stands."""
    name = f"eval_{evaluation.name}.json"
    errors: list[str] = []
    result = read_json(path / name, errors)
    if result is None:
        why = "; ".join(errors) or f"no {name}"
    else:
        changed = settings_differences(evaluation, result.get("settings") or {})
        checkpoint = Path(str(result.get("checkpoint"))).name
        if not checkpoint.startswith("best"):
            why = f"{name} evaluated {checkpoint}, not the best checkpoint"
        elif changed:
            why = f"{name} has other settings ({', '.join(changed)})"
        else:
            return EvaluationState(DONE, "evaluated with these settings", result)
    if best_checkpoint(path) is None:
        return EvaluationState(NO_CHECKPOINT, f"{why}; no checkpoints/best-*.ckpt here")
    return EvaluationState(PENDING, why)
