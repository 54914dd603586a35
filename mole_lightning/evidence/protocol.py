"""The evidence protocol's cells: which runs it holds, in which order, with which config.

A protocol file (``conf/evidence.yaml``) names tasks, methods, seeds and stages; each
(stage, seed, task, method) is one cell, one ``train()`` run in its own folder
``<out>/<task>/<method>/seed<seed>``. A cell's config is composed by Hydra from
``conf/train.yaml`` exactly as ``train.py`` composes it. Its ``evaluations`` section says
which evaluation suites (``scripts/evaluate.py``'s) run on which cells once they have
trained; it is no part of a cell's config.
"""

from __future__ import annotations

import copy
import functools
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.core.tasks import GLUE_TASKS
from mole_lightning.errors import ConfigError
from mole_lightning.evaluation.advglue import advglue_sets
from mole_lightning.evaluation.perturb import PERTURBATIONS
from mole_lightning.evaluation.transfer import MAPPINGS_DIR, load_mapping
from mole_lightning.models.config_store import register_conf

DEFAULT_PROTOCOL = Path(CONFIG_DIR) / "evidence.yaml"
TRAINERS = ("cpu", "gpu")
# what --report writes: the full report (methods compared with LoRA), or a variants
# table (grids and ablations: mole_lightning/evidence/variants.py)
REPORT_KINDS = ("full", "variants")
ALL_STAGES = "all"
STAGE_KEYS = ("tasks", "methods", "variant", "overrides")
VARIANT_SEPARATOR = "@"
EVALUATION_KEYS = ("methods", "options", "tasks")


@dataclass(frozen=True)
class Evaluation:
    """One evaluation suite a protocol runs on a trained cell's best checkpoint.

    Attributes:
        suite: a suite of ``scripts/evaluate.py`` (``conf/eval/<suite>.yaml``).
        options: the suite's options: those of ``conf/eval/<suite>.yaml`` (resolved),
            each key the protocol gives replacing the file's value; a transfer evaluation
            has one target.
        given: the option keys the protocol gives.
    """

    suite: str
    options: dict = field(hash=False)
    given: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The result's file stem after ``eval_`` (``advglue``, ``transfer_mrpc``)."""
        if self.suite == "transfer":
            return f"transfer_{self.options['targets'][0]}"
        return self.suite


@dataclass
class Protocol:
    """A protocol file's content (see ``conf/evidence.yaml`` for each key).

    ``evaluations``: task -> the evaluations of its cells whose method is one of
    ``evaluation_methods``."""

    path: Path
    common: list[str]
    tasks: dict[str, list[str]]
    methods: dict[str, list[str]]
    seeds: list[int]
    stages: dict[str, dict[str, list[str]]]
    metric: str
    may_differ: list[str]
    report: str = "full"
    epochs_tolerance: float | None = None
    """``choose_epochs.tolerance``: a variants report then gives, per done cell, the
    epochs its curve supports (``mole_lightning/evidence/variants.py``:
    ``chosen_epochs``)."""

    @property
    def name(self) -> str:
        """The file's stem: the name of its section in docs/results.md."""
        return self.path.stem

    evaluation_methods: list[str] = field(default_factory=list)
    evaluations: dict[str, list[Evaluation]] = field(default_factory=dict)

    def evaluations_of(self, task: str, method: str) -> list[Evaluation]:
        """The evaluations of a cell of ``task`` and ``method``, in file order."""
        if method not in self.evaluation_methods:
            return []
        return list(self.evaluations.get(task, []))

    def stage_names(self, stage: str) -> list[str]:
        """The stages ``stage`` selects (``all``: every stage, in file order)."""
        if stage == ALL_STAGES:
            return list(self.stages)
        if stage not in self.stages:
            raise ConfigError(
                f"unknown stage {stage!r} in {self.path}; valid: {', '.join(self.stages)}, {ALL_STAGES}"
            )
        return [stage]


def cell_label(method: str, variant: str | None) -> str:
    """A cell's folder name under its task: the method, or ``method@variant``."""
    return method if variant is None else f"{method}{VARIANT_SEPARATOR}{variant}"


@dataclass
class ProtocolCell:
    """One run of the protocol.

    Attributes:
        stage, task, method, seed: what it runs.
        path: its folder, ``<out>/<task>/<label>/seed<seed>``.
        overrides: every Hydra override of the run except ``paths.output_dir`` and a
            resume ``ckpt_path`` (merged by key: a later override replaces an earlier one).
        evaluations: what runs on its best checkpoint once it has trained.
    """

    stage: str
    task: str
    method: str
    seed: int
    path: Path
    overrides: list[str] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    variant: str | None = None
    """A stage variant's name (its stage's ``variant``): the method's cell with the stage's
    ``overrides`` on top, beside the method's own cell of the same task and seed."""

    @property
    def label(self) -> str:
        """``method``, or ``method@variant`` for a stage variant's cell (its folder)."""
        return cell_label(self.method, self.variant)

    @property
    def name(self) -> str:
        return f"{self.task}/{self.label}/seed{self.seed}"

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
            file does not define, two stages running one cell with different overrides,
            an unknown ``metric``, or a bad ``evaluations`` section
            (``parse_evaluations``); the message names the file.
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
        epochs_tolerance=parse_choose_epochs(node.get("choose_epochs"), path),
    )
    if protocol.metric not in ("best", "final"):
        raise ConfigError(f"{path}: metric must be best or final, not {protocol.metric!r}")
    if protocol.report not in REPORT_KINDS:
        raise ConfigError(
            f"{path}: report must be one of {', '.join(REPORT_KINDS)}, not {protocol.report!r}"
        )
    if protocol.epochs_tolerance is not None and protocol.report != "variants":
        raise ConfigError(f"{path}: choose_epochs is read by a variants report (report: variants)")
    for name, stage in protocol.stages.items():
        check_stage(path, name, stage)
        for kind, known in (("tasks", protocol.tasks), ("methods", protocol.methods)):
            unknown = [x for x in stage.get(kind, []) if x not in known]
            if not stage.get(kind) or unknown:
                raise ConfigError(
                    f"{path}: stage {name!r} needs a list of {kind} defined under '{kind}' "
                    f"(unknown: {', '.join(unknown) or 'none given'})"
                )
    protocol.evaluation_methods, protocol.evaluations = parse_evaluations(
        node.get("evaluations"), protocol
    )
    # refuses two stages that run one folder with different overrides, whichever stage a
    # command selects (the folder names do not depend on --out or the trainer)
    plan_cells(protocol, ALL_STAGES, Path("."), TRAINERS[0])
    return protocol


def parse_choose_epochs(node, path: Path) -> float | None:
    """``choose_epochs: {tolerance: <t>}`` (optional): the tolerance, a fraction of the
    dev metric in (0, 1).

    Raises:
        ConfigError: anything else, naming the file.
    """
    if node is None:
        return None
    tolerance = node.get("tolerance") if isinstance(node, dict) else None
    if (
        not isinstance(node, dict)
        or set(node) != {"tolerance"}
        or isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float)
        or not 0 < tolerance < 1
    ):
        raise ConfigError(
            f"{path}: choose_epochs must be {{tolerance: <a fraction of the dev metric in "
            f"(0, 1)>}}, not {node!r}"
        )
    return float(tolerance)


def check_stage(path: Path, name: str, stage) -> None:
    """A stage is ``tasks`` and ``methods``, optionally ``overrides`` its cells add (a
    list of ``key=value`` for every method, or a mapping from some of its methods to such
    lists), and for a stage variant a ``variant`` name, which needs ``overrides``.

    Raises:
        ConfigError: naming the file, the stage and the bad key.
    """
    if not isinstance(stage, dict):
        raise ConfigError(f"{path}: stage {name!r} must be a mapping of {', '.join(STAGE_KEYS)}")
    unknown = [k for k in stage if k not in STAGE_KEYS]
    if unknown:
        raise ConfigError(
            f"{path}: stage {name!r} has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(STAGE_KEYS)}"
        )
    if "variant" in stage and "overrides" not in stage:
        raise ConfigError(
            f"{path}: stage {name!r}: a stage variant needs both 'variant' (its name) and "
            "'overrides' (what its cells change)"
        )
    if "variant" in stage:
        variant = stage["variant"]
        if not isinstance(variant, str) or not variant or any(c in variant for c in "/@ "):
            raise ConfigError(
                f"{path}: stage {name!r}: variant must be a non-empty name without '/', "
                f"'@' or spaces, not {variant!r}"
            )
    if "overrides" in stage:
        overrides = stage["overrides"]
        lists = overrides.values() if isinstance(overrides, dict) else [overrides]
        if not all(
            isinstance(group, list) and all(isinstance(o, str) and "=" in o for o in group)
            for group in lists
        ):
            raise ConfigError(
                f"{path}: stage {name!r}: overrides must be a list of key=value, or a mapping "
                f"from the stage's methods to such lists, not {overrides!r}"
            )
        if isinstance(overrides, dict):
            strangers = [m for m in overrides if m not in stage.get("methods", [])]
            if strangers:
                raise ConfigError(
                    f"{path}: stage {name!r}: overrides name method(s) the stage does not "
                    f"run: {', '.join(map(repr, strangers))}"
                )


def stage_overrides(stage: dict, method: str) -> list[str]:
    """What a stage adds to its cells of ``method``: its ``overrides`` list, or the
    method's entry of its ``overrides`` mapping (none if the mapping does not name it)."""
    overrides = stage.get("overrides", [])
    if isinstance(overrides, dict):
        overrides = overrides.get(method, [])
    return [str(o) for o in overrides]


@functools.cache
def suite_defaults() -> dict[str, dict]:
    """Each evaluation suite's options as ``scripts/evaluate.py`` composes them
    (``conf/eval/<suite>.yaml``, interpolations resolved), by suite name."""
    from hydra import compose, initialize_config_dir

    names = sorted(p.stem for p in (Path(CONFIG_DIR) / "eval").glob("*.yaml"))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate.yaml", overrides=[f"eval=[{','.join(names)}]"])
    return OmegaConf.to_container(cfg.suites, resolve=True)


def parse_evaluations(node, protocol: Protocol) -> tuple[list[str], dict[str, list[Evaluation]]]:
    """The ``evaluations`` section of a protocol file: ``(methods, task -> evaluations)``.

    The section (optional; absent: no evaluation)::

        evaluations:
          methods: [lora, molex]         # whose cells are evaluated (under 'methods')
          options:                       # per suite, for every task (optional)
            perturb: {rates: [0.0, 0.1]}
          tasks:                         # per task: suite -> its own options (or {})
            rte: {advglue: {}, perturb: {}}
            stsb: {transfer: {targets: [mrpc]}}

    A task must be a GLUE task; one the protocol does not train (no cell of it) is
    allowed and evaluates nothing until a stage trains it.

    Raises:
        ConfigError: naming the file and the key (``evaluations.tasks.cola.advglue``): an
            unknown key, suite, option, method or task, a suite that does not apply to
            the task (AdvGLUE has no set for it; a transfer without targets or without a
            declared mapping), or an unknown perturbation kind or a rate outside [0, 1].
    """
    path = protocol.path
    if node is None:
        return [], {}
    if not isinstance(node, dict):
        raise ConfigError(
            f"{path}: 'evaluations' must be a mapping of {', '.join(EVALUATION_KEYS)}"
        )
    for key in node:
        if key not in EVALUATION_KEYS:
            raise ConfigError(
                f"{path}: evaluations.{key}: unknown key; valid: {', '.join(EVALUATION_KEYS)}"
            )
    methods = node.get("methods")
    if not isinstance(methods, list) or not methods:
        raise ConfigError(
            f"{path}: evaluations.methods must be a list of the methods (under 'methods') "
            "whose cells are evaluated"
        )
    for method in methods:
        if method not in protocol.methods:
            raise ConfigError(
                f"{path}: evaluations.methods names {method!r}, not a method under "
                f"'methods' (valid: {', '.join(protocol.methods)})"
            )
    shared = mapping_at(node.get("options"), "evaluations.options", path)
    for suite, options in shared.items():
        check_options(suite, mapping_at(options, f"evaluations.options.{suite}", path), path)
    tasks = node.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError(f"{path}: evaluations.tasks must map tasks to their suites")
    evaluations = {}
    for task, suites in tasks.items():
        key = f"evaluations.tasks.{task}"
        if task not in GLUE_TASKS:
            raise ConfigError(
                f"{path}: {key}: unknown task {task!r}; valid: {', '.join(GLUE_TASKS)}"
            )
        found: dict[str, Evaluation] = {}
        for suite, options in mapping_at(suites, key, path).items():
            own = mapping_at(options, f"{key}.{suite}", path)
            check_options(suite, own, path, f"{key}.{suite}")
            given = {**(shared.get(suite) or {}), **own}
            resolved_options = {**copy.deepcopy(suite_defaults()[suite]), **given}
            for evaluation in suite_evaluations(suite, task, resolved_options, given, path, key):
                found[evaluation.name] = evaluation
        evaluations[task] = list(found.values())
    return list(methods), evaluations


def mapping_at(node, key: str, path: Path) -> dict:
    """``node`` as a mapping (``None``: empty).

    Raises:
        ConfigError: anything else, naming ``key``.
    """
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: {key} must be a mapping, not {node!r}")
    return node


def check_options(suite: str, options: dict, path: Path, key: str | None = None) -> None:
    """Raises ``ConfigError`` for an unknown suite, or an option its config file lacks."""
    defaults = suite_defaults()
    key = key or f"evaluations.options.{suite}"
    if suite not in defaults:
        raise ConfigError(
            f"{path}: {key}: unknown evaluation suite {suite!r}; valid: {', '.join(defaults)}"
        )
    for option in options:
        if option not in defaults[suite]:
            valid = ", ".join(defaults[suite]) or "none"
            raise ConfigError(
                f"{path}: {key}.{option}: unknown option of suite {suite} "
                f"(conf/eval/{suite}.yaml); valid: {valid}"
            )


def suite_evaluations(
    suite: str, task: str, options: dict, given: dict, path: Path, key: str
) -> list[Evaluation]:
    """The evaluations of ``suite`` on cells of ``task`` (a transfer: one per target),
    checked against the task.

    Raises:
        ConfigError: the suite does not apply to the task (see ``parse_evaluations``).
    """
    where = f"{path}: {key}.{suite}"
    try:
        if suite == "advglue":
            advglue_sets(task, options["sets"])
        if suite == "transfer":
            targets = options["targets"]
            if not isinstance(targets, list) or not targets:
                raise ConfigError(
                    f"transfer needs targets: [<task>, ...] (a mapping {task}_to_<task>.yaml)"
                )
            for target in targets:
                load_mapping(task, target, options.get("mappings_dir") or MAPPINGS_DIR)
            return [Evaluation(suite, {**options, "targets": [t]}, tuple(given)) for t in targets]
        if suite == "perturb":
            unknown = [k for k in options["kinds"] if k not in PERTURBATIONS]
            if unknown:
                raise ConfigError(
                    f"unknown perturbation kind(s) {unknown}; valid: {', '.join(PERTURBATIONS)}"
                )
            if not all(isinstance(p, int | float) and 0 <= p <= 1 for p in options["rates"]):
                raise ConfigError(f"rates {options['rates']} must be numbers in [0, 1]")
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return [Evaluation(suite, options, tuple(given))]


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
    is planned once, in the first; two stages running it with different overrides are an
    error. A stage's overrides come after the method's; ``extra`` overrides come last.

    Raises:
        ConfigError: an unknown trainer, or one cell folder two stages run differently.
    """
    if trainer not in TRAINERS:
        raise ConfigError(f"trainer {trainer!r}; valid: {', '.join(TRAINERS)}")
    cells = []
    for name in protocol.stage_names(stage):
        spec = protocol.stages[name]
        variant = spec.get("variant")
        for seed in protocol.seeds:
            for task in spec["tasks"]:
                for method in spec["methods"]:
                    overrides = merge_overrides(
                        [f"task={task}", f"method={method}", f"trainer={trainer}"],
                        protocol.common,
                        protocol.tasks[task],
                        protocol.methods[method],
                        stage_overrides(spec, method),
                        [f"seed={seed}"],
                        list(extra),
                    )
                    path = out / task / cell_label(method, variant) / f"seed{seed}"
                    planned = next((c for c in cells if c.path == path), None)
                    if planned is not None and planned.overrides != overrides:
                        raise ConfigError(
                            f"{protocol.path}: stages {planned.stage!r} and {name!r} both "
                            f"run {planned.name} with different overrides; give one of "
                            "them a variant name (its own folders)"
                        )
                    if planned is None:
                        evaluations = [] if variant else protocol.evaluations_of(task, method)
                        cells.append(
                            ProtocolCell(
                                name, task, method, seed, path, overrides, evaluations, variant
                            )
                        )
    return cells


def compose_cell(cell: ProtocolCell, ckpt_path: Path | None = None) -> DictConfig:
    """The cell's config, composed by Hydra from ``conf/train.yaml`` (as ``train.py``
    does), writing into the cell's folder; ``ckpt_path`` resumes from a checkpoint."""
    from hydra import compose, initialize_config_dir

    register_conf()
    overrides = [*cell.overrides, f"paths.output_dir={cell.path.resolve()}"]
    if ckpt_path is not None:
        overrides.append(f"ckpt_path={ckpt_path.resolve()}")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train.yaml", overrides=overrides)


def resolved(cfg: DictConfig) -> dict:
    """The config as plain values, every interpolation resolved (what ``train()`` saves
    as ``resolved_config.yaml``)."""
    return OmegaConf.to_container(cfg, resolve=True)
