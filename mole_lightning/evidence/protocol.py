"""The evidence protocol's cells: which runs it holds, in which order, with which config.

A protocol file (``conf/evidence.yaml``) names tasks, methods, seeds and stages; each
(stage, seed, task, method) is one cell, one ``train()`` run in its own folder
``<out>/<task>/<method>/seed<seed>``. A cell's config is composed by Hydra from
``conf/train.yaml`` exactly as ``train.py`` composes it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.errors import ConfigError
from mole_lightning.models.config_store import register_options

DEFAULT_PROTOCOL = Path(CONFIG_DIR) / "evidence.yaml"
TRAINERS = ("cpu", "gpu")
# what --report writes: the full report (methods compared with LoRA), or a variants
# table (grids and ablations: mole_lightning/evidence/variants.py)
REPORT_KINDS = ("full", "variants")
ALL_STAGES = "all"


@dataclass
class Protocol:
    """A protocol file's content (see ``conf/evidence.yaml`` for each key)."""

    path: Path
    common: list[str]
    tasks: dict[str, list[str]]
    methods: dict[str, list[str]]
    seeds: list[int]
    stages: dict[str, dict[str, list[str]]]
    metric: str
    may_differ: list[str]
    report: str = "full"

    @property
    def name(self) -> str:
        """The file's stem: the name of its section in docs/results.md."""
        return self.path.stem

    def stage_names(self, stage: str) -> list[str]:
        """The stages ``stage`` selects (``all``: every stage, in file order)."""
        if stage == ALL_STAGES:
            return list(self.stages)
        if stage not in self.stages:
            raise ConfigError(
                f"unknown stage {stage!r} in {self.path}; valid: {', '.join(self.stages)}, {ALL_STAGES}"
            )
        return [stage]


@dataclass
class ProtocolCell:
    """One run of the protocol.

    Attributes:
        stage, task, method, seed: what it runs.
        path: its folder, ``<out>/<task>/<method>/seed<seed>``.
        overrides: every Hydra override of the run except ``paths.output_dir`` and a
            resume ``ckpt_path`` (merged by key: a later override replaces an earlier one).
    """

    stage: str
    task: str
    method: str
    seed: int
    path: Path
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.task}/{self.method}/seed{self.seed}"

    def train_command(self) -> str:
        """The equivalent single-run command line."""
        args = [*self.overrides, f"hydra.run.dir={self.path}"]
        return "python train.py " + " ".join(shlex.quote(a) for a in args)


def require(node: dict, key: str, kind: type, path: Path):
    if key not in node or not isinstance(node[key], kind):
        raise ConfigError(f"{path}: '{key}' must be a {kind.__name__}")
    return node[key]


def load_protocol(path: Path = DEFAULT_PROTOCOL) -> Protocol:
    """Reads and checks a protocol file.

    Raises:
        ConfigError: a missing key, a wrong type, a stage naming a task or method the
            file does not define, or an unknown ``metric``; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no protocol file at {path}")
    node = yaml.safe_load(path.read_text())
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: expected a mapping")
    protocol = Protocol(
        path=path,
        common=[str(o) for o in require(node, "common", list, path)],
        tasks={k: [str(o) for o in v or []] for k, v in require(node, "tasks", dict, path).items()},
        methods={
            k: [str(o) for o in v or []] for k, v in require(node, "methods", dict, path).items()
        },
        seeds=[int(s) for s in require(node, "seeds", list, path)],
        stages=require(node, "stages", dict, path),
        metric=str(node.get("metric", "best")),
        may_differ=[str(k) for k in node.get("may_differ", [])],
        report=str(node.get("report", "full")),
    )
    if protocol.metric not in ("best", "final"):
        raise ConfigError(f"{path}: metric must be best or final, not {protocol.metric!r}")
    if protocol.report not in REPORT_KINDS:
        raise ConfigError(
            f"{path}: report must be one of {', '.join(REPORT_KINDS)}, not {protocol.report!r}"
        )
    for name, stage in protocol.stages.items():
        for kind, known in (("tasks", protocol.tasks), ("methods", protocol.methods)):
            unknown = [x for x in stage.get(kind, []) if x not in known]
            if not stage.get(kind) or unknown:
                raise ConfigError(
                    f"{path}: stage {name!r} needs a list of {kind} defined under '{kind}' "
                    f"(unknown: {', '.join(unknown) or 'none given'})"
                )
    return protocol


def merge_overrides(*groups: list[str]) -> list[str]:
    """Hydra overrides in order, a later ``key=value`` replacing an earlier one of the
    same key (Hydra itself refuses a key given twice)."""
    merged: dict[str, str] = {}
    for override in (o for group in groups for o in group):
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not key=value")
        key = override.split("=", 1)[0].lstrip("+~")
        merged.pop(key, None)
        merged[key] = override
    return list(merged.values())


def plan_cells(
    protocol: Protocol, stage: str, out: Path, trainer: str, extra: list[str] = ()
) -> list[ProtocolCell]:
    """The cells of ``stage`` (or every stage) in run order: stage by stage, and within a
    stage seed by seed, then task, then method. A cell two stages name (the same folder)
    is planned once, in the first. ``extra`` overrides come last."""
    if trainer not in TRAINERS:
        raise ConfigError(f"trainer {trainer!r}; valid: {', '.join(TRAINERS)}")
    cells = []
    for name in protocol.stage_names(stage):
        spec = protocol.stages[name]
        for seed in protocol.seeds:
            for task in spec["tasks"]:
                for method in spec["methods"]:
                    overrides = merge_overrides(
                        [f"task={task}", f"method={method}", f"trainer={trainer}"],
                        protocol.common,
                        protocol.tasks[task],
                        protocol.methods[method],
                        [f"seed={seed}"],
                        list(extra),
                    )
                    path = out / task / method / f"seed{seed}"
                    if all(c.path != path for c in cells):
                        cells.append(ProtocolCell(name, task, method, seed, path, overrides))
    return cells


def compose_cell(cell: ProtocolCell, ckpt_path: Path | None = None) -> DictConfig:
    """The cell's config, composed by Hydra from ``conf/train.yaml`` (as ``train.py``
    does), writing into the cell's folder; ``ckpt_path`` resumes from a checkpoint."""
    from hydra import compose, initialize_config_dir

    register_options()
    overrides = [*cell.overrides, f"paths.output_dir={cell.path.resolve()}"]
    if ckpt_path is not None:
        overrides.append(f"ckpt_path={ckpt_path.resolve()}")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train.yaml", overrides=overrides)


def resolved(cfg: DictConfig) -> dict:
    """The config as plain values, every interpolation resolved (what ``train()`` saves
    as ``resolved_config.yaml``)."""
    return OmegaConf.to_container(cfg, resolve=True)
