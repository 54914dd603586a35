"""Where a protocol cell stands on disk: done, new, to resume, or to run again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from mole_lightning.analysis.runs import Run, load_run
from mole_lightning.analysis.table import flatten
from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.utils.config_upgrade import upgrade_config
from mole_lightning.utils.run_info import METRICS, RUN_INFO

DONE, NEW, RESUME, RERUN = "done", "new", "resume", "rerun"


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
