"""Reading finished, failed and unfinished run directories from disk (never from W&B).

A run directory is one that holds ``run_info.json`` (written by ``train()`` at the start
of every run); beside it ``resolved_config.yaml`` and, once the run finished,
``metrics.json``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mole_lightning.utils.config_upgrade import upgrade_config
from mole_lightning.utils.run_info import METRICS, RESOLVED_CONFIG, RUN_INFO

METRIC_CHOICES = ("best", "final")


@dataclass
class Run:
    """One run directory as read from disk.

    Attributes:
        path: the run directory.
        status: ``finished``, ``failed``, ``running`` (or killed), or ``unreadable``.
        info: ``run_info.json`` (task, method, backbone, seed, error, ...).
        config: ``resolved_config.yaml`` as a dict, renamed keys under today's names
            (``upgrade_config``; ``None`` when missing).
        metrics: ``metrics.json`` (``None`` when missing).
        read_errors: files that exist but could not be parsed, with the parser's message.
    """

    path: Path
    status: str
    info: dict = field(default_factory=dict)
    config: dict | None = None
    metrics: dict[str, float] | None = None
    read_errors: list[str] = field(default_factory=list)

    @property
    def task(self) -> str | None:
        return self.info.get("task") or self.config_value("task.name")

    @property
    def method(self) -> str | None:
        return self.info.get("method") or self.config_value("method.name")

    @property
    def backbone(self) -> str | None:
        return self.info.get("backbone") or self.config_value("backbone.name")

    @property
    def seed(self) -> Any:
        return self.info.get("seed", self.config_value("seed"))

    @property
    def monitor(self) -> str | None:
        """The task's monitored dev metric (``task.monitor`` of the resolved config)."""
        return self.config_value("task.monitor")

    def config_value(self, dotted: str) -> Any:
        """The resolved config's value at ``a.b.c`` (``None`` when absent)."""
        node: Any = self.config
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def metric_key(self, which: str) -> str | None:
        """The metrics.json key of the monitored metric: ``best/<monitor>`` (the best
        checkpoint re-validated) or ``<monitor>`` (the last validation)."""
        if which not in METRIC_CHOICES:
            raise ValueError(f"metric={which!r}; valid: {', '.join(METRIC_CHOICES)}")
        if self.monitor is None:
            return None
        return f"best/{self.monitor}" if which == "best" else self.monitor

    def score(self, which: str) -> float | None:
        """The monitored dev metric, or ``None`` when this run cannot give it."""
        key = self.metric_key(which)
        if self.status != "finished" or self.metrics is None or key is None:
            return None
        value = self.metrics.get(key)
        return None if value is None else float(value)

    def unfinished_reason(self) -> str:
        """How a run that did not finish ended: failed (with its error), interrupted,
        still running or killed, or an unknown status."""
        if self.status == "failed":
            return f"failed: {self.info.get('error', 'no error recorded')}"
        if self.status == "running":
            started = self.info.get("started", "?")
            return f"unfinished: status running since {started} (still running, or killed)"
        if self.status == "interrupted":
            return f"interrupted (Ctrl-C or SIGTERM) at {self.info.get('ended', '?')}"
        return f"unknown status {self.status!r}"

    def problem(self, which: str) -> str | None:
        """Why this run gives no table value (``None`` when it gives one)."""
        if self.read_errors:
            return "; ".join(self.read_errors)
        if self.status != "finished":
            return self.unfinished_reason()
        if self.metrics is None:
            return f"finished but no {METRICS}"
        if self.config is None:
            return f"no {RESOLVED_CONFIG}: the task's metric is unknown"
        if self.monitor is None:
            return f"{RESOLVED_CONFIG} has no task.monitor"
        if self.score(which) is None:
            key = self.metric_key(which)
            hint = (
                " (no validation ran: max_steps ended before the first one? "
                "set trainer.val_check_interval=<steps>)"
            )
            if which == "best" and self.monitor in self.metrics:
                hint = " (no best checkpoint was re-validated; try --metric final)"
            return f"no {key} in {METRICS}{hint}"
        return None


def read_json(path: Path, errors: list[str]) -> dict | None:
    """A JSON file's object; ``None`` when missing; unreadable files are noted in ``errors``."""
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        errors.append(f"unreadable {path.name}: {err}")
        return None
    if not isinstance(payload, dict):
        errors.append(f"unreadable {path.name}: expected an object, got {type(payload).__name__}")
        return None
    return payload


def read_yaml(path: Path, errors: list[str]) -> dict | None:
    """A YAML mapping; ``None`` when missing; unreadable files are noted in ``errors``."""
    if not path.is_file():
        return None
    try:
        payload = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        errors.append(f"unreadable {path.name}: {err}")
        return None
    if not isinstance(payload, dict):
        errors.append(f"unreadable {path.name}: expected a mapping")
        return None
    return payload


def load_run(path: Path) -> Run:
    """Reads one run directory (it must hold ``run_info.json``)."""
    errors: list[str] = []
    info = read_json(path / RUN_INFO, errors)
    if info is None:
        return Run(path=path, status="unreadable", read_errors=errors or [f"no {RUN_INFO}"])
    config = read_yaml(path / RESOLVED_CONFIG, errors)
    return Run(
        path=path,
        status=str(info.get("status", "unknown")),
        info=info,
        config=None if config is None else upgrade_config(config),
        metrics=read_json(path / METRICS, errors),
        read_errors=errors,
    )


def find_runs(root: Path) -> list[Run]:
    """Every run directory under ``root`` (``root`` itself included), sorted by path."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such directory: {root}")
    return [load_run(info.parent) for info in sorted(root.rglob(RUN_INFO))]


def find_runs_or_exit(root: Path) -> list[Run]:
    """``find_runs`` for command-line scripts: a missing folder exits with status 2 and
    a folder without runs with status 1, each with a message on stderr."""
    try:
        runs = find_runs(root)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if not runs:
        print(f"error: no run directories (with run_info.json) under {root}", file=sys.stderr)
        raise SystemExit(1)
    return runs
