"""The evaluation suites: what each one evaluates and the table it leaves.

Each suite is a function ``(Evaluator, suite config) -> list[SuiteResult]``; a result
becomes ``eval_<name>.json`` (headline ``metrics`` for ``scripts/collect.py``, the
``rows`` of the table, and what was evaluated) and ``eval_<name>.csv`` (the rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mole_lightning.core.tasks import GlueTaskSpec, get_task
from mole_lightning.data.datamodule import read_split
from mole_lightning.data.glue import read_glue_split
from mole_lightning.errors import ConfigError
from mole_lightning.evaluation.advglue import advglue_sets, read_advglue
from mole_lightning.evaluation.checkpoint import EvalRun
from mole_lightning.evaluation.data import dev_loaders, examples_loader
from mole_lightning.evaluation.perturb import perturb_examples
from mole_lightning.evaluation.predict import predict, score, task_metrics
from mole_lightning.evaluation.transfer import (
    MAPPINGS_DIR,
    declared_pairs,
    load_mapping,
    map_predictions,
    mapped_targets,
    target_data_missing,
)
from mole_lightning.reporting import Line, LinePanel, draw_lines
from mole_lightning.utils.run_info import RESOLVED_CONFIG


@dataclass
class SuiteResult:
    """One suite's outcome.

    Attributes:
        name: file stem after ``eval_`` (``dev``, ``advglue``, ``perturb``, ``transfer_mrpc``).
        metrics: flat headline metrics (``advglue/rte/acc``, ``perturb/typo/0.1/acc``, ...).
        rows: the table, one flat dict per row (CSV columns = their keys).
        settings: what was evaluated (files, rates, seeds, mapping): the suite's options
            (the keys of ``conf/eval/<suite>.yaml``) and what they resolved to; the
            evidence protocol compares them with the options it asks for.
        plot: draws the suite's figure to a path, or ``None``.
        notes: what a reader of the table must know (printed under it).
    """

    name: str
    metrics: dict[str, float]
    rows: list[dict]
    settings: dict = field(default_factory=dict)
    plot: Callable[[Path], None] | None = None
    notes: list[str] = field(default_factory=list)


class Evaluator:
    """Runs suites on one loaded checkpoint; the clean dev metrics are computed once and
    shared by the suites that report a drop from them."""

    def __init__(self, run: EvalRun) -> None:
        self.run = run
        self.spec = run.model.spec

    @property
    def monitor(self) -> str:
        """The task's monitored metric without its prefix (``acc``, ``mcc``, ``pearson``)."""
        return self.run.cfg.task.monitor.removeprefix("val/")

    @cached_property
    def dev(self) -> dict[str, dict[str, float]]:
        """Clean dev metrics per dev split (``validation``, MNLI's ``validation_mismatched``);
        the gold labels of each split are kept in ``dev_labels`` (``[N]`` per split)."""
        self.dev_labels: dict[str, torch.Tensor] = {}
        metrics = {}
        for split, loader in dev_loaders(self.run).items():
            predictions = predict(self.run.model, loader, self.run.device, f"dev {split}")
            self.dev_labels[split] = predictions.labels
            metrics[split] = task_metrics(self.spec, predictions)
        return metrics

    def evaluate(self, name: str, examples, task: str | None = None):
        """Predictions of the checkpoint on ``examples`` (rows of the GLUE task ``task``,
        default the checkpoint's own task)."""
        loader = examples_loader(self.run, name, examples, task or self.spec)
        return predict(self.run.model, loader, self.run.device, name)


def recorded_part(run_dir: Path, size: int) -> str | None:
    """How much of a dev split of ``size`` examples the run's own validation read, when
    ``trainer.limit_val_batches`` (its ``resolved_config.yaml``) cut it short, else
    ``None``: ``"2 batches of 16 = 32 of 277 examples (trainer.limit_val_batches=2)"``."""
    path = run_dir / RESOLVED_CONFIG
    if not path.is_file():
        return None
    saved = OmegaConf.load(path)
    limit = OmegaConf.select(saved, "trainer.limit_val_batches")
    if limit is None or (isinstance(limit, float) and limit >= 1.0):
        return None
    setting = f"trainer.limit_val_batches={limit}"
    if isinstance(limit, float):
        return f"{limit:.0%} of the batches ({setting})"
    batch = OmegaConf.select(saved, "data.eval_batch_size")
    read = int(limit) * int(batch) if batch else None
    if read is not None and read >= size:
        return None
    counted = f" = {read} of {size} examples" if read is not None else ""
    return f"{limit} batch(es) of {batch}{counted} ({setting})"


def dev_suite(ev: Evaluator, cfg: DictConfig) -> list[SuiteResult]:
    """The task's dev set(s), keyed as in ``metrics.json`` (``val/acc``, ``val/acc_mm``),
    beside what the run recorded for this checkpoint. A recorded value that came from a
    validation cut short by ``trainer.limit_val_batches`` is said to be one
    (``recorded_on``, and a note): this evaluation reads the whole split, so they differ."""
    recorded = ev.run.reference_metrics()
    metrics, rows, notes = {}, [], []
    for i, (split, values) in enumerate(ev.dev.items()):
        part = recorded_part(ev.run.run_dir, len(ev.dev_labels[split])) if recorded else None
        if part:
            notes.append(
                f"{split}: the run recorded its dev metrics on part of the split, {part}; "
                f"this evaluation reads all {len(ev.dev_labels[split])} examples, so 'equal' is "
                "not expected to hold"
            )
        for metric, value in values.items():
            key = f"val/{metric}{'' if i == 0 else '_mm'}"
            metrics[key] = value
            row = {
                "split": split,
                "metric": key,
                "value": value,
                "recorded": recorded.get(key),
                "equal": recorded.get(key) == value if key in recorded else None,
            }
            if part:
                row["recorded_on"] = part
            rows.append(row)
    settings = {"checkpoint": ev.run.ckpt.name, **({"notes": notes} if notes else {})}
    return [SuiteResult("dev", metrics, rows, settings, notes=notes)]


def constant_accuracies(spec: GlueTaskSpec, labels: torch.Tensor) -> dict[str, float]:
    """The accuracy of always answering each class, ``label name -> share of the rows
    with that gold label``: what a model that learned nothing the set rewards scores.

    Args:
        labels: ``[N]`` gold class ids of ``spec``.
    """
    return {name: float((labels == i).float().mean()) for i, name in enumerate(spec.labels)}


def advglue_suite(ev: Evaluator, cfg: DictConfig) -> list[SuiteResult]:
    """Accuracy on each AdvGLUE set of the task and its drop from clean dev accuracy,
    beside the accuracy of always answering each class on the set (``const_<label>``)
    and on the clean dev split (``clean_const_<label>``)."""
    metrics, rows = {}, []
    for name in advglue_sets(ev.run.task, cfg.sets):
        node = cfg.sets[name]
        preds = ev.evaluate(f"advglue-{name}", read_advglue(cfg.file, name, node))
        acc = task_metrics(ev.spec, preds)["acc"]
        split = node.get("clean_split", "validation")
        clean = ev.dev[split]["acc"]
        const = constant_accuracies(ev.spec, preds.labels)
        clean_const = constant_accuracies(ev.spec, ev.dev_labels[split])
        metrics |= {f"advglue/{name}/acc": acc, f"advglue/{name}/drop": clean - acc}
        metrics |= {f"advglue/{name}/const/{label}": v for label, v in const.items()}
        metrics |= {f"advglue/{name}/clean_const/{label}": v for label, v in clean_const.items()}
        rows.append(
            {
                "set": name,
                "n": len(preds.labels),
                "acc": acc,
                "clean_acc": clean,
                "drop": clean - acc,
                **{f"const_{label}": v for label, v in const.items()},
                **{f"clean_const_{label}": v for label, v in clean_const.items()},
            }
        )
    settings = {"file": str(cfg.file), "sets": OmegaConf.to_container(cfg.sets, resolve=True)}
    return [SuiteResult("advglue", metrics, rows, settings)]


def perturb_suite(ev: Evaluator, cfg: DictConfig) -> list[SuiteResult]:
    """The first dev split under each perturbation kind at each rate (the curve), with the
    drop of the monitored metric from the clean (``p = 0``) value."""
    split = next(iter(ev.spec.dev_splits))
    examples = read_split(ev.spec, split, ev.run.cfg.data)
    clean = ev.dev[split]
    metrics, rows = {}, []
    for kind in cfg.kinds:
        for p in cfg.rates:
            if p == 0:
                values = clean
            else:
                perturbed = perturb_examples(examples, kind, float(p), int(cfg.seed))
                values = task_metrics(
                    ev.spec, ev.evaluate(f"perturb-{kind}-{p}-s{cfg.seed}", perturbed)
                )
            drop = clean[ev.monitor] - values[ev.monitor]
            metrics |= {f"perturb/{kind}/{p}/{k}": v for k, v in values.items()}
            rows.append({"kind": kind, "p": float(p), "n": len(examples), **values, "drop": drop})
    settings = {
        "split": split,
        "kinds": list(cfg.kinds),
        "rates": list(cfg.rates),
        "seed": cfg.seed,
    }
    title = f"{ev.run.task} {ev.run.cfg.method.name}: dev under perturbations (seed {cfg.seed})"
    return [
        SuiteResult(
            "perturb",
            metrics,
            rows,
            settings,
            lambda path: draw_lines(
                path, [perturbation_panel(rows, ev.monitor, title)], size=(5, 3.5)
            ),
        )
    ]


def perturbation_panel(rows: list[dict], metric: str, title: str) -> LinePanel:
    """One line per perturbation kind: ``metric`` against the rate ``p`` (``rows``: dicts
    with ``kind``, ``p`` and ``metric``)."""
    lines = []
    for i, kind in enumerate(dict.fromkeys(r["kind"] for r in rows)):
        points = sorted((r["p"], r[metric]) for r in rows if r["kind"] == kind)
        lines.append(Line(kind, [p for p, _ in points], [v for _, v in points], colour=i))
    return LinePanel(title, ("perturbation rate p", f"dev {metric}"), lines)


def transfer_suite(ev: Evaluator, cfg: DictConfig) -> list[SuiteResult]:
    """Zero-shot scores on each target task's dev set through the declared mapping, one
    result per target (its settings name that one target); a classification target's
    result has the accuracy of always answering each class too (``const/<label>``)."""
    if not cfg.targets:
        mappings_dir = cfg.get("mappings_dir") or MAPPINGS_DIR
        mapped = mapped_targets(ev.run.task, mappings_dir)
        data_dir = ev.run.cfg.data.get("dir")
        targets = [t for t in mapped if target_data_missing(t, data_dir) is None]
        if targets:
            raise ConfigError(
                "eval=transfer needs target tasks; a checkpoint of "
                f"{ev.run.task!r} has mappings to {', '.join(mapped)}"
                f"{f' (dev data here for {len(targets)})' if targets != mapped else ''}: "
                f"`python scripts/evaluate.py ckpt_path={ev.run.ckpt} eval=transfer "
                f"'suites.transfer.targets=[{','.join(targets)}]'`"
            )
        if mapped:
            raise ConfigError(
                f"eval=transfer: a checkpoint of {ev.run.task!r} has mappings to "
                f"{', '.join(mapped)}, but {data_dir} holds none of their dev sets; give "
                "data_dir=<glue_data folder with them> and "
                f"'suites.transfer.targets=[{','.join(mapped)}]'"
            )
        raise ConfigError(
            f"eval=transfer: no transfer mapping from {ev.run.task!r} is declared "
            f"(declared: {', '.join(declared_pairs(mappings_dir))}); add "
            f"{Path(mappings_dir) / f'{ev.run.task}_to_<target>.yaml'} to evaluate this "
            "checkpoint on another task, or evaluate it with eval=dev,perturb"
        )
    results = []
    for target in cfg.targets:
        mapping = load_mapping(ev.run.task, target, cfg.get("mappings_dir") or MAPPINGS_DIR)
        target_spec = get_task(target)
        split = next(iter(target_spec.dev_splits))
        data_dir = ev.run.cfg.data.get("dir")
        examples = read_glue_split(target_spec, split, data_dir)
        preds = ev.evaluate(f"transfer-{target}", examples, task=target)
        values = score(
            target_spec,
            map_predictions(mapping, ev.spec, target_spec, preds),
            preds.labels,
            preds.batch_size,
        )
        if not target_spec.is_regression:
            const = constant_accuracies(target_spec, preds.labels)
            values |= {f"const/{label}": v for label, v in const.items()}
        rows = [
            {"source": ev.run.task, "target": target, "n": len(examples), "metric": k, "value": v}
            for k, v in values.items()
        ]
        metrics = {f"transfer/{target}/{k}": v for k, v in values.items()}
        settings = {
            "mapping": OmegaConf.to_container(mapping),
            "split": split,
            "targets": [target],
            "mappings_dir": cfg.get("mappings_dir"),
        }
        results.append(SuiteResult(f"transfer_{target}", metrics, rows, settings))
    return results


SUITES: dict[str, Callable[[Evaluator, DictConfig], list[SuiteResult]]] = {
    "dev": dev_suite,
    "advglue": advglue_suite,
    "perturb": perturb_suite,
    "transfer": transfer_suite,
}
