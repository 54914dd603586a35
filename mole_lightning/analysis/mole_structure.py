"""MoLE's structure claims, tested over a folder of finished MoLE runs.

The MoLE paper says (a) graph experts are preferred in upper layers and the MLP adapter
in lower ones; its open question (c) is whether pruning keeps the same experts across
seeds. Both are compared here with random pruning under the same rule (``per_layer``
top-k, or ``graph_layers`` / ``graph_layers_softmax``):

- ``graph_by_layer``: per layer, how many runs kept a graph expert, against the random
  rate (exact binomial test), and the upper half of the layers against the lower half
  (one-sided Fisher exact test: more graph experts above);
- ``seed_agreement``: per task, the share of layers two seeds agree on (same kept
  experts), averaged over seed pairs, against random pruning (its mean and a Monte Carlo
  p-value: the share of random structures that agree at least as much);
- ``gate_margins``: how decided each gate was when pruning decided (top-1 minus top-2
  importance, from ``mole_importance_at_prune.json``): a margin near 0 means the kept
  expert was chosen by noise.

Each run folder needs ``mole_structure.json`` (written at the prune) and a finished
``run_info.json``.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from mole_lightning.analysis.runs import Run
from mole_lightning.analysis.table import task_label, task_order
from mole_lightning.methods.mole.config import EXPERTS, GRAPH_EXPERTS
from mole_lightning.reporting import draw_bars, markdown_table

STRUCTURE_FILE = "mole_structure.json"
IMPORTANCE_FILE = "mole_importance_at_prune.json"
SIMULATIONS = 10000


@dataclass(frozen=True)
class PruneRule:
    """How a run pruned: ``rule`` (``per_layer``, ``graph_layers`` or
    ``graph_layers_softmax``), ``top_k``,
    ``graph_layers`` and the experts every layer started with."""

    rule: str
    top_k: int
    graph_layers: int
    experts: tuple[str, ...]

    @property
    def graph_experts(self) -> tuple[str, ...]:
        return tuple(e for e in self.experts if e in GRAPH_EXPERTS)

    def random_graph_rate(self, num_layers: int) -> float:
        """Probability that random pruning keeps a graph expert in a given layer."""
        if self.rule.startswith("graph_layers"):
            return min(self.graph_layers, num_layers) / num_layers
        plain = len(self.experts) - len(self.graph_experts)
        return 1.0 - math.comb(plain, self.top_k) / math.comb(len(self.experts), self.top_k)

    def random_structure(self, num_layers: int, rng: np.random.Generator) -> list[frozenset]:
        """A structure drawn by random pruning under this rule: kept experts per layer."""
        if self.rule.startswith("graph_layers"):
            chosen = set(rng.choice(num_layers, size=self.graph_layers, replace=False).tolist())
            return [
                frozenset([self.graph_experts[rng.integers(len(self.graph_experts))]])
                if layer in chosen
                else frozenset(["mlp"])
                for layer in range(num_layers)
            ]
        return [
            frozenset(
                self.experts[i] for i in rng.choice(len(self.experts), self.top_k, replace=False)
            )
            for _ in range(num_layers)
        ]


@dataclass
class StructureRun:
    """A finished MoLE run's pruned structure.

    Attributes:
        path: the run folder.
        task, seed: what it trained.
        rule: how it pruned.
        structure: kept expert names per layer.
        importance: ``[layers, experts]`` importances at the prune (``rule.experts``
            order), or ``None`` without ``mole_importance_at_prune.json``.
    """

    path: Path
    task: str
    seed: int
    rule: PruneRule
    structure: list[list[str]]
    importance: np.ndarray | None = None


def read_structure_runs(runs: list[Run]) -> list[StructureRun]:
    """The finished MoLE runs among ``runs`` that pruned (have ``mole_structure.json``).

    Raises:
        ValueError: a structure file that is not valid JSON or lacks ``structure``
            (the message names the file).
    """
    found = []
    for run in runs:
        path = run.path / STRUCTURE_FILE
        if run.method != "mole" or run.status != "finished" or not path.is_file():
            continue
        try:
            saved = json.loads(path.read_text())
            structure = [list(kept) for kept in saved["structure"]]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a MoLE structure file ({err!r})") from err
        experts = tuple(run.config_value("method.experts") or EXPERTS)
        rule = PruneRule(
            saved.get("rule", "per_layer"),
            int(saved.get("top_k", 1)),
            int(saved.get("graph_layers", 2)),
            experts,
        )
        found.append(
            StructureRun(
                run.path, str(run.task), int(run.seed), rule, structure, read_importance(run.path)
            )
        )
    return found


def read_importance(path: Path) -> np.ndarray | None:
    """``[layers, experts]`` importances at the prune, or ``None`` without the file."""
    table = path / IMPORTANCE_FILE
    if not table.is_file():
        return None
    try:
        values = json.loads(table.read_text())["values"]
        return np.array([[np.nan if v is None else float(v) for v in row] for row in values])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{table}: not an importance table ({err!r})") from err


def common_rule(runs: list[StructureRun]) -> PruneRule:
    """The one prune rule all ``runs`` share.

    Raises:
        ValueError: no runs, or runs that pruned differently (named), whose structures
            random pruning would not draw alike.
    """
    if not runs:
        raise ValueError("no finished MoLE run with a mole_structure.json")
    rules = {r.rule for r in runs}
    if len(rules) > 1:
        by_rule = {rule: [str(r.path) for r in runs if r.rule == rule] for rule in rules}
        raise ValueError(
            "the runs pruned under different rules; analyse each group on its own: "
            + "; ".join(f"{rule}: {paths}" for rule, paths in by_rule.items())
        )
    return rules.pop()


@dataclass
class LayerGraphRate:
    """Layer ``layer``: ``graph`` of ``runs`` kept a graph expert; random pruning keeps
    one with probability ``random``; ``p_value``: exact two-sided binomial test."""

    layer: int
    graph: int
    runs: int
    random: float
    p_value: float


@dataclass
class GraphByLayer:
    """Claim (a): the per-layer rates, and the upper half of the layers against the lower
    half (``upper``/``lower``: graph experts kept of ``upper_total``/``lower_total``;
    ``p_value``: one-sided Fisher exact test, more graph experts in the upper half)."""

    layers: list[LayerGraphRate]
    upper: int
    upper_total: int
    lower: int
    lower_total: int
    p_value: float


def graph_by_layer(runs: list[StructureRun]) -> GraphByLayer:
    """Claim (a) over all ``runs`` (every task and seed)."""
    rule = common_rule(runs)
    num_layers = max(len(r.structure) for r in runs)
    random = rule.random_graph_rate(num_layers)
    rows = []
    kept = np.zeros((num_layers, 2), dtype=int)  # [layer, (graph, total)]
    for layer in range(num_layers):
        present = [r for r in runs if layer < len(r.structure)]
        graph = sum(any(e in GRAPH_EXPERTS for e in r.structure[layer]) for r in present)
        kept[layer] = graph, len(present)
        p_value = stats.binomtest(graph, len(present), random).pvalue if present else math.nan
        rows.append(LayerGraphRate(layer, graph, len(present), random, float(p_value)))
    half = num_layers // 2
    lower, lower_total = kept[:half].sum(axis=0)
    upper, upper_total = kept[num_layers - half :].sum(axis=0)
    table = [[upper, upper_total - upper], [lower, lower_total - lower]]
    p_value = stats.fisher_exact(table, alternative="greater").pvalue if half else math.nan
    return GraphByLayer(
        rows, int(upper), int(upper_total), int(lower), int(lower_total), float(p_value)
    )


def agreement(structures: list[list[frozenset]]) -> float:
    """Mean over seed pairs of the share of layers whose kept experts are the same."""
    pairs = list(itertools.combinations(structures, 2))
    return float(np.mean([np.mean([a == b for a, b in zip(s, t, strict=True)]) for s, t in pairs]))


@dataclass
class SeedAgreement:
    """Claim (c) for one task: ``observed`` agreement over ``seeds``; random pruning
    gives ``random`` on average and at least ``observed`` with probability ``p_value``."""

    task: str
    seeds: list[int]
    observed: float
    random: float
    p_value: float


def seed_agreement(runs: list[StructureRun], seed: int = 0) -> list[SeedAgreement]:
    """Claim (c) per task with two or more seeds (Monte Carlo over ``SIMULATIONS``
    random structures per seed, generator seeded with ``seed``)."""
    rule = common_rule(runs)
    rng = np.random.default_rng(seed)
    results = []
    for task in sorted({r.task for r in runs}, key=task_order):
        group = sorted((r for r in runs if r.task == task), key=lambda r: r.seed)
        if len(group) < 2:
            continue
        num_layers = len(group[0].structure)
        observed = agreement([[frozenset(k) for k in r.structure] for r in group])
        simulated = np.array(
            [
                agreement([rule.random_structure(num_layers, rng) for _ in group])
                for _ in range(SIMULATIONS)
            ]
        )
        results.append(
            SeedAgreement(
                task,
                [r.seed for r in group],
                observed,
                float(simulated.mean()),
                float((simulated >= observed - 1e-12).mean()),
            )
        )
    return results


def gate_margins(run: StructureRun) -> np.ndarray | None:
    """``[layers]`` top-1 minus top-2 importance at the prune (NaN for a layer with fewer
    than two experts left), or ``None`` without the importance table."""
    if run.importance is None:
        return None
    margins = []
    for row in run.importance:
        values = np.sort(row[~np.isnan(row)])[::-1]
        margins.append(values[0] - values[1] if len(values) > 1 else np.nan)
    return np.array(margins)


def gate_entropies(run: StructureRun) -> np.ndarray | None:
    """``[layers]`` entropy (nats) of each layer's importance at the prune (``ln n`` for an
    undecided gate over ``n`` experts), or ``None`` without the importance table."""
    if run.importance is None:
        return None
    p = np.where(run.importance > 0, run.importance, np.nan)  # 0 ln 0 = 0
    return -np.nansum(p * np.log(p), axis=1)


def report_lines(
    runs: list[StructureRun], by_layer: GraphByLayer, figure: Path | None = None
) -> list[str]:
    """Markdown: the runs, claim (a) (``by_layer = graph_by_layer(runs)``), claim (c) and
    the gates' margins at the prune."""
    rule = common_rule(runs)
    described = (
        f"top-{rule.top_k} per layer"
        if rule.rule == "per_layer"
        else f"a graph expert in {rule.graph_layers} layers"
    )
    lines = [
        f"{len(runs)} finished MoLE runs ({', '.join(task_label(t) for t in sorted({r.task for r in runs}, key=task_order))}); "
        f"pruning rule: {described} of {list(rule.experts)}.",
        "",
        "**(a) Graph experts by layer** (the paper: graph experts in upper layers, the MLP "
        "adapter in lower ones). Random pruning keeps a graph expert with probability "
        f"{by_layer.layers[0].random:.2f} in every layer.",
        "",
        *markdown_table(
            ["layer", "graph expert kept", "share", "random", "binomial p"],
            [
                [
                    row.layer,
                    f"{row.graph} of {row.runs}",
                    f"{row.graph / row.runs if row.runs else math.nan:.2f}",
                    f"{row.random:.2f}",
                    f"{row.p_value:.3g}",
                ]
                for row in by_layer.layers
            ],
        ).splitlines(),
        "",
        f"Upper half of the layers: {by_layer.upper} of {by_layer.upper_total} graph experts; "
        f"lower half: {by_layer.lower} of {by_layer.lower_total}; one-sided Fisher exact "
        f"p = {by_layer.p_value:.3g} (small: more graph experts above)."
        + (f" [Figure]({figure.name})." if figure else ""),
        "",
        "**(c) Agreement across seeds**: the share of layers in which two seeds kept the "
        "same experts, averaged over seed pairs.",
        "",
    ]
    agreements = [
        [
            task_label(a.task),
            ", ".join(map(str, a.seeds)),
            f"{a.observed:.2f}",
            f"{a.random:.2f}",
            f"{a.p_value:.3g}",
        ]
        for a in seed_agreement(runs)
    ]
    header = ["task", "seeds", "agreement", "random pruning", "p (random agrees as much)"]
    lines += markdown_table(
        header, agreements or [["–", "no task has two seeds", "", "", ""]]
    ).splitlines()
    margins = []
    for run in sorted(runs, key=lambda r: (task_order(r.task), r.seed)):
        gaps = gate_margins(run)
        cells = ["–"] * len(by_layer.layers) if gaps is None else [f"{m:.4f}" for m in gaps]
        margins.append([f"{task_label(run.task)} seed {run.seed}", *cells])
    lines += [
        "",
        "**Gates at the prune**: top-1 minus top-2 importance per layer (0: a coin flip).",
        "",
        *markdown_table(
            ["run", *(f"layer {i}" for i in range(len(by_layer.layers)))], margins
        ).splitlines(),
    ]
    return lines


def plot_graph_by_layer(result: GraphByLayer, path: Path) -> None:
    """Bar chart: share of runs keeping a graph expert per layer, random rate dashed."""
    draw_bars(
        path,
        [str(row.layer) for row in result.layers],
        [row.graph / row.runs if row.runs else 0.0 for row in result.layers],
        [f"{row.graph}/{row.runs}" for row in result.layers],
        (result.layers[0].random, "random pruning"),
        f"MoLE: graph experts kept per layer (n={result.layers[0].runs} runs)",
        ("layer (0 = lowest)", "runs keeping a graph expert"),
    )
