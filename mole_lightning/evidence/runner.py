"""Running the protocol's cells one after another: skip the done, resume the killed,
record every attempt, print a progress line per cell, go on after a failure, and stop
on Ctrl-C or SIGTERM. A trained cell's pending evaluations run next, in-process on its
best checkpoint."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from mole_lightning.analysis.runs import read_json
from mole_lightning.errors import ConfigError
from mole_lightning.evaluation.checkpoint import load_eval_run
from mole_lightning.evaluation.report import write_result
from mole_lightning.evaluation.suites import SUITES, Evaluator
from mole_lightning.evidence.protocol import Evaluation, ProtocolCell, compose_cell
from mole_lightning.evidence.state import (
    DONE,
    NO_CHECKPOINT,
    NO_CHECKPOINT_HELP,
    PENDING,
    RERUN,
    RESUME,
    CellState,
    best_checkpoint,
    cell_state,
    evaluation_state,
    last_checkpoint,
)
from mole_lightning.utils.machine import machine_record
from mole_lightning.utils.run_info import RUN_INFO, write_json

CELL_RECORD = "evidence_cell.json"
CELL_LOG = "train.log"
PREVIOUS_DIR = "_previous"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
COUNTS = (
    "done",
    "busy",
    "finished",
    "failed",
    "not done",
    "evaluated",
    "evaluation failed",
    "no checkpoint",
)
"""What ``ProtocolRunner.run`` counts: cells, then evaluations."""


class StopSignal:
    """SIGTERM handler while the protocol runs: SIGTERM (``kill <pid>``, a scheduler
    ending the job) stops the protocol as Ctrl-C does, and the running attempt is
    recorded as interrupted.

    Inside a Trainer call, Lightning's own SIGTERM handler is in charge and calls this
    one after itself: Lightning ends the call at the next step with ``SIGTERMException``,
    so the checkpoints on disk stay whole. Elsewhere (data preparation, between cells)
    this handler raises ``KeyboardInterrupt`` at once. ``received`` stays set, so an
    attempt that ends in another error after the signal (a DataLoader worker that
    ``pkill -f`` killed first) still counts as interrupted."""

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum: int, frame) -> None:
        self.received = True
        if signal.getsignal(signal.SIGTERM) is self:  # not inside a Trainer call
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """This handler for SIGTERM inside the block, the previous one after it."""
        previous = signal.signal(signal.SIGTERM, self)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


def stopped_by(err: BaseException) -> bool:
    """Whether ``err`` says the run's own DataLoader workers were ended by SIGTERM or
    SIGINT (``pkill -f scripts/evidence.py`` signals them with the runner; the worker's
    death can surface before the runner's own handler has run): a stop, not a failure."""
    return "DataLoader worker" in str(err) and any(
        f"killed by signal: {name}" in str(err) for name in ("Terminated", "Interrupt")
    )


@contextlib.contextmanager
def cell_log(path: Path) -> Iterator[None]:
    """Appends every log line of a cell's run (progress lines, Lightning's messages) to
    ``path``, as ``train.log`` of a ``python train.py`` run under Hydra; a resumed
    attempt adds to the same file. The handler is the root logger's, at INFO for the
    duration (Hydra's level); Lightning's lines reach it once the command line has
    routed them there (``route_lightning_logs``, as ``train.py`` does)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.setLevel(min(level, logging.INFO))
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def read_record(path: Path) -> dict:
    """A cell's ``evidence_cell.json`` (empty when missing or unreadable)."""
    try:
        record = json.loads((path / CELL_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def wall_seconds(record: dict) -> float | None:
    """Total wall time of a cell's attempts that ended (killed attempts have no end)."""
    walls = [a["wall_s"] for a in record.get("attempts", []) if a.get("wall_s") is not None]
    return sum(walls) if walls else None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def move_aside(cell: ProtocolCell, out: Path) -> Path:
    """Moves a cell folder that will run from scratch to
    ``<out>/_previous/<task>/<label>/seed<k>-<time>`` (kept, never deleted)."""
    target = (
        out
        / PREVIOUS_DIR
        / cell.task
        / cell.label
        / f"seed{cell.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(cell.path), str(target))
    return target


def eval_overrides(cfg: DictConfig) -> dict:
    """The evaluation's data settings from the cell's config as the protocol composes it
    now (the saved run's may be another machine's: ``may_differ``)."""
    return {
        "data.dir": cfg.data.get("dir"),
        "paths.cache_dir": cfg.paths.cache_dir,
        "data.num_workers": cfg.data.num_workers,
    }


def run_evaluation(evaluator: Evaluator, evaluation: Evaluation) -> None:
    """Runs one evaluation's suite with its options on the loaded checkpoint and writes
    each result (``eval_<name>.json`` last, atomically) into the run's folder."""
    for result in SUITES[evaluation.suite](evaluator, OmegaConf.create(evaluation.options)):
        write_result(evaluator.run, result)


def cell_lock(cell: ProtocolCell) -> FileLock:
    """The lock a runner holds while it works on ``cell``: ``.seed<k>.lock`` beside the
    cell's folder (which a rerun moves aside), e.g. ``<out>/rte/lora/.seed1.lock``."""
    cell.path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(cell.path.parent / f".{cell.path.name}.lock")


@contextlib.contextmanager
def claimed(cell: ProtocolCell, refuse_busy: bool) -> Iterator[bool]:
    """Holds the cell's lock (``cell_lock``) for the block and yields ``True``; yields
    ``False`` (holding nothing) when another process holds it.

    Raises:
        ConfigError: ``refuse_busy`` and another process holds the lock; the message
            names the cell and the lock file.
    """
    lock = cell_lock(cell)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if refuse_busy:
            raise ConfigError(
                f"another scripts/evidence.py is running {cell.name} (it holds "
                f"{lock.lock_file}); wait for it to end or stop it, then run this again"
            ) from None
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def estimate_left(cells: list[ProtocolCell], walls: dict[str, float]) -> tuple[float | None, int]:
    """Estimated seconds for those of ``cells`` that have not finished (not in
    ``walls``): each costs the mean wall time of the finished cells of its task and
    method, else of every finished cell. Returns ``(seconds or None when no cell has
    finished, number of finished cells it is based on)``."""
    if not walls:
        return None, 0
    overall = statistics.fmean(walls.values())
    total = 0.0
    for cell in (c for c in cells if c.name not in walls):
        same = [
            w for name, w in walls.items() if name.rsplit("/", 1)[0] == f"{cell.task}/{cell.label}"
        ]
        total += statistics.fmean(same) if same else overall
    return total, len(walls)


def finished_walls(cells: list[ProtocolCell]) -> dict[str, float]:
    """``cell name -> wall seconds`` of the cells that finished (from their records)."""
    walls = {}
    for cell in cells:
        info = read_json(cell.path / RUN_INFO, [])
        if info is not None and info.get("status") == "finished":
            wall = wall_seconds(read_record(cell.path))
            if wall is not None:
                walls[cell.name] = wall
    return walls


class ProtocolRunner:
    """Runs ``cells`` in order with ``train_fn`` (``mole_lightning.train.train``).

    Args:
        cells: the planned cells (``plan_cells``).
        out: the protocol folder.
        may_differ: resolved-config keys that do not make a done cell run again.
        protocol_command: the command line that runs (and continues) this protocol,
            saved in every cell's record.
        train_fn: trains one composed config and returns its metrics.
        log: where progress lines go.
        skips_busy_cells: a cell whose lock (``cell_lock``) another runner holds is
            skipped and counted ``busy``, so runners started with the same command on
            one folder share its cells (one per core or GPU); ``False`` for a runner of
            one cell (``scripts/evidence.py --cell``, a task of a SLURM array), which is
            refused instead. Every runner holds a cell's lock while it works on the cell.
        evaluate_only: train nothing; run the pending evaluations of the done cells only
            (``--evaluate-only``), each under the cell's lock, so it can run beside a
            runner that trains.
    """

    def __init__(
        self,
        cells: list[ProtocolCell],
        out: Path,
        may_differ: list[str],
        protocol_command: str,
        train_fn: Callable,
        log: Callable[[str], None] = print,
        skips_busy_cells: bool = True,
        evaluate_only: bool = False,
    ) -> None:
        self.cells, self.out, self.may_differ = cells, out, may_differ
        self.protocol_command, self.train_fn, self.log = protocol_command, train_fn, log
        self.skips_busy_cells = skips_busy_cells
        self.evaluate_only = evaluate_only
        self.stop_signal = StopSignal()

    def states(self) -> list[CellState]:
        """Each cell's state against the protocol's config (nothing runs)."""
        return [
            cell_state(c.path, compose_cell(c), self.may_differ, c.overrides) for c in self.cells
        ]

    def dry_run(self) -> list[CellState]:
        """Prints what each cell would do, with its single-run command, and each of its
        evaluations that is not done (a cell not done yet: the evaluations that follow
        its training)."""
        states = self.states()
        for i, (cell, state) in enumerate(zip(self.cells, states, strict=True), start=1):
            self.log(
                f"[{i}/{len(self.cells)}] {cell.name} ({cell.stage}): {state.kind}: {state.reason}"
            )
            if state.kind != DONE:
                self.log(f"    {cell.train_command()}")
                if cell.evaluations:
                    names = ", ".join(e.name for e in cell.evaluations)
                    self.log(f"    then evaluates: {names}")
                continue
            blocked = False
            for evaluation in cell.evaluations:
                found = evaluation_state(cell.path, evaluation)
                if found.kind != DONE:
                    self.log(f"    eval {evaluation.name}: {found.kind}: {found.reason}")
                    blocked |= found.kind == NO_CHECKPOINT
            if blocked:
                self.log(f"    ({NO_CHECKPOINT_HELP})")
        return states

    def run(self) -> dict[str, int]:
        """Runs every cell that is not done, then the pending evaluations of every done
        cell (``evaluate_only``: the evaluations only); returns counts of ``done``
        (skipped), ``busy`` (another runner holds them: skipped), ``finished``, ``failed``
        and ``not done`` (``evaluate_only``) cells, and of evaluations ``evaluated``,
        ``evaluation failed`` and ``no checkpoint``.

        Raises:
            KeyboardInterrupt: Ctrl-C or SIGTERM; the running attempt is recorded as
                ``interrupted`` (its last checkpoint stays, so the same command resumes
                it) and no further cell starts.
            ConfigError: not ``skips_busy_cells`` and another runner holds the lock of
                the cell (``cell_lock``); the locks are the operating system's, so a
                killed runner leaves none behind.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        with self.stop_signal.installed():
            return self._run_cells()

    def _run_cells(self) -> dict[str, int]:
        started = time.monotonic()
        counts = dict.fromkeys(COUNTS, 0)
        total = len(self.cells)
        for i, cell in enumerate(self.cells, start=1):
            prefix = f"[evidence {i}/{total}] {cell.name}"
            cfg = compose_cell(cell)
            if self.evaluate_only:
                state = cell_state(cell.path, cfg, self.may_differ, cell.overrides)
                if state.kind != DONE:
                    self.log(
                        f"{prefix}: {state.kind} ({state.reason}): not trained (--evaluate-only)"
                    )
                    counts["not done"] += 1
                    continue
            with claimed(cell, refuse_busy=not self.skips_busy_cells) as mine:
                if not mine:
                    self.log(f"{prefix}: busy (another scripts/evidence.py has it), skipped")
                    counts["busy"] += 1
                    continue
                if self.evaluate_only:
                    counts["done"] += 1
                else:
                    outcome = self._visit(cell, cfg, prefix, i, started)
                    counts[outcome] += 1
                    if outcome == "failed":
                        continue
                self._evaluate(cell, cfg, prefix, counts)
        cells = (
            f"{counts['not done']} not done (not trained: --evaluate-only)"
            if self.evaluate_only
            else f"{counts['finished']} finished, {counts['failed']} failed"
        )
        self.log(
            f"[evidence] {counts['done']} done earlier, {cells}, {counts['busy']} busy "
            f"(another runner has them); evaluations: "
            f"{counts['evaluated']} written, {counts['evaluation failed']} failed, "
            f"{counts['no checkpoint']} without a checkpoint; in "
            f"{format_duration(time.monotonic() - started)}"
        )
        return counts

    def _evaluate(
        self, cell: ProtocolCell, cfg: DictConfig, prefix: str, counts: dict[str, int]
    ) -> None:
        """Runs the pending evaluations of a trained cell (``cfg``: its config as the
        protocol composes it) on its best checkpoint, each result written atomically into
        the cell's folder; says which cannot run (no checkpoint) and goes on after a
        failed one (counted in ``counts``)."""
        pending = {}
        for evaluation in cell.evaluations:
            state = evaluation_state(cell.path, evaluation)
            if state.kind == NO_CHECKPOINT:
                self.log(
                    f"{prefix}: eval {evaluation.name} cannot run: {state.reason} "
                    f"({NO_CHECKPOINT_HELP})"
                )
                counts["no checkpoint"] += 1
            elif state.kind == PENDING:
                pending[evaluation] = state.reason
        if not pending:
            return
        ckpt = best_checkpoint(cell.path)
        self.log(
            f"{prefix}: evaluating {ckpt.name}: "
            + ", ".join(f"{e.name} ({why})" for e, why in pending.items())
        )
        evaluator = None
        for evaluation in pending:
            begin = time.monotonic()
            try:
                evaluator = evaluator or Evaluator(
                    load_eval_run(ckpt, overrides=eval_overrides(cfg))
                )
                run_evaluation(evaluator, evaluation)
            except Exception as err:
                if self.stop_signal.received or stopped_by(err):
                    raise KeyboardInterrupt(str(err)) from err
                # a failed evaluation is reported and the protocol goes on
                error = f"{type(err).__name__}: {err}"
                self.log(f"{prefix}: eval {evaluation.name} failed: {error}")
                print(f"error in {cell.name} eval {evaluation.name}: {error}", file=sys.stderr)
                counts["evaluation failed"] += 1
                continue
            self.log(
                f"{prefix}: eval {evaluation.name} written in "
                f"{format_duration(time.monotonic() - begin)}"
            )
            counts["evaluated"] += 1

    def _visit(
        self, cell: ProtocolCell, cfg: DictConfig, prefix: str, i: int, started: float
    ) -> str:
        """Skips cell number ``i`` (of ``self.cells``, from 1; ``cfg``: its config as the
        protocol composes it) when it is done, else runs it; returns ``done``,
        ``finished`` or ``failed``."""
        state = cell_state(cell.path, cfg, self.may_differ, cell.overrides)
        if state.kind == DONE:
            self.log(f"{prefix}: done earlier, skipped")
            return "done"
        left, based_on = estimate_left(self.cells[i - 1 :], finished_walls(self.cells))
        estimate = (
            f"~{format_duration(left)} left (from {based_on} finished cells)"
            if left is not None
            else "time left unknown until a cell finishes"
        )
        self.log(
            f"{prefix}: {state.kind} ({state.reason}) | elapsed "
            f"{format_duration(time.monotonic() - started)} | {estimate}"
        )
        try:
            ok = self.run_cell(cell, state)
        finally:
            for last in read_record(cell.path).get("attempts", [])[-1:]:
                self.log(
                    f"{prefix}: {last['outcome']} in {format_duration(last['wall_s'])}"
                    + (f": {last['error']}" if last.get("error") else "")
                )
        return "finished" if ok else "failed"

    def run_cell(self, cell: ProtocolCell, state: CellState) -> bool:
        """One attempt at a cell; returns whether it finished.

        Raises:
            KeyboardInterrupt: the attempt was interrupted (Ctrl-C, SIGTERM; Lightning
                turns both into ``SystemExit`` inside ``fit``).
        """
        ckpt = last_checkpoint(cell.path) if state.kind == RESUME else None
        if state.kind == RERUN and cell.path.exists():
            moved = move_aside(cell, self.out)
            self.log(f"    previous folder moved to {moved}")
        record = read_record(cell.path) if ckpt is not None else {}
        attempt = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "outcome": "running",
            "wall_s": None,
            "resumed_from": str(ckpt) if ckpt else None,
            "machine": machine_record(),
        }
        record = {
            "cell": cell.name,
            "stage": cell.stage,
            "protocol_command": self.protocol_command,
            "train_command": cell.train_command(),
            "attempts": [*record.get("attempts", []), attempt],
        }
        cell.path.mkdir(parents=True, exist_ok=True)
        write_json(cell.path / CELL_RECORD, record)
        begin = time.monotonic()
        try:
            with cell_log(cell.path / CELL_LOG):
                self.train_fn(compose_cell(cell, ckpt))
            attempt["outcome"] = "finished"
        except BaseException as err:
            if self.stop_signal.received or not isinstance(err, Exception) or stopped_by(err):
                attempt["outcome"] = "interrupted"
                raise KeyboardInterrupt(str(err)) from err
            # a failed cell is recorded and the protocol goes on
            attempt["outcome"] = "failed"
            attempt["error"] = f"{type(err).__name__}: {err}"
            print(f"error in {cell.name}: {attempt['error']}", file=sys.stderr)
        finally:
            attempt["wall_s"] = time.monotonic() - begin
            attempt["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            write_json(cell.path / CELL_RECORD, record)
        return attempt["outcome"] == "finished"
