"""What the report reads of each planned cell: its state, record, throughput and the
state of its evaluations; and the two ways the report aggregates over seeds (a level,
mean ± std; a paired difference to LoRA on the same seed)."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mole_lightning.analysis.runs import Run
from mole_lightning.callbacks.throughput import THROUGHPUT_FILE
from mole_lightning.evidence.protocol import Evaluation, ProtocolCell
from mole_lightning.evidence.runner import read_record
from mole_lightning.evidence.state import DONE, CellState, EvaluationState, evaluation_state

BASELINE = "lora"


@dataclass
class CellResult:
    """A planned cell with its state and, when it ran, its run, record and throughput;
    for a done cell, the state of each of its evaluations."""

    cell: ProtocolCell
    state: CellState
    record: dict
    throughput: dict
    evaluations: list[tuple[Evaluation, EvaluationState]] = field(default_factory=list)

    @property
    def run(self) -> Run | None:
        return self.state.run

    @property
    def done(self) -> bool:
        return self.state.kind == DONE

    def score(self, metric: str) -> float | None:
        return self.run.score(metric) if self.done and self.run else None

    def evaluated(self, suite: str) -> list[tuple[Evaluation, dict]]:
        """``(evaluation, its eval JSON)`` of the done evaluations of ``suite``."""
        return [(e, s.result) for e, s in self.evaluations if e.suite == suite and s.kind == DONE]


def read_throughput(path: Path) -> dict:
    try:
        return json.loads((path / THROUGHPUT_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def gather(cells: list[ProtocolCell], states: list[CellState]) -> list[CellResult]:
    return [
        CellResult(
            cell,
            state,
            read_record(cell.path),
            read_throughput(cell.path),
            [(e, evaluation_state(cell.path, e)) for e in cell.evaluations]
            if state.kind == DONE
            else [],
        )
        for cell, state in zip(cells, states, strict=True)
    ]


def pct(value: float | None, decimals: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{decimals}f}"


def mean_std(values: list[float], decimals: int = 1, signed: bool = True) -> str:
    """``mean ± std (n=k)`` (sample std; no ± for one value); ``signed``: ``+`` before a
    positive mean (a difference)."""
    mean = statistics.fmean(values)
    std = f" ± {statistics.stdev(values):.{decimals}f}" if len(values) > 1 else ""
    sign = "+" if signed else ""
    return f"{mean:{sign}.{decimals}f}{std} (n={len(values)})"


def paired_to_baseline(
    values: dict[tuple[str, str, int], float], baseline: str = BASELINE
) -> dict[tuple[str, str], list[float]]:
    """``(method, key, seed) -> value`` into ``(method, key) -> [value - baseline's value
    of the same key and seed]``, over the seeds where both have one (``key``: a task, a
    column of a table)."""
    diffs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (method, key, seed), value in values.items():
        base = values.get((baseline, key, seed))
        if method != baseline and base is not None:
            diffs[method, key].append(value - base)
    return dict(diffs)
