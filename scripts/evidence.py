"""Run, continue and report the evidence protocol (conf/evidence.yaml).

    python scripts/evidence.py [--stage cola_rte|mrpc_stsb|full|all] [--trainer cpu|gpu]
        [--out docs/evidence/runs] [--override KEY=VALUE ...] [--dry-run] [--cell N]
        [--evaluate-only]
    python scripts/evidence.py [--protocol FILE --out DIR] --report [--results docs/results.md]
        [--csv <out>/cells.csv] [--figures <out>/figures]

Each cell (task, method, seed) is one train() run in <out>/<task>/<method>/seed<seed>.
Running again skips every cell that finished with the protocol's config, resumes a
killed or failed one from its last.ckpt, and runs the rest; a failed cell is recorded
and the protocol goes on. Ctrl-C or SIGTERM (kill <pid>) records the running attempt as
interrupted and stops (exit status 130); the same command continues from its last
checkpoint. After a cell has trained (or, for a cell done earlier, when it comes up),
the evaluations the protocol's `evaluations:` section names run on its best checkpoint
(eval_<suite>.json in the cell's folder); --evaluate-only runs only those of the done
cells, training nothing. --report writes the protocol's section of docs/results.md
(between the markers named after the protocol file's stem, so each protocol has its own
section), a CSV of every cell and the figures: the full report (methods against LoRA), or
for a protocol with `report: variants` (a grid, an ablation) its variants table.

--cell N runs only the N-th cell of the selection (numbered as --dry-run numbers them),
holding only that cell's lock: the cells of a SLURM array run at once, one per task
(docs/experiments.md). Any runner refuses a cell another runner is working on.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from mole_lightning.errors import ConfigError, reported_as_exit
from mole_lightning.evidence.protocol import (
    ALL_STAGES,
    DEFAULT_PROTOCOL,
    TRAINERS,
    ProtocolCell,
    load_protocol,
    plan_cells,
)
from mole_lightning.evidence.report import (
    glance_markdown,
    replace_section,
    report_markdown,
    runs_csv,
)
from mole_lightning.evidence.results import gather
from mole_lightning.evidence.runner import LOG_FORMAT, ProtocolRunner
from mole_lightning.evidence.variants import variants_markdown
from mole_lightning.utils.run_info import write_text_atomic

INTERRUPTED_EXIT_CODE = 130  # the shell's status for a Ctrl-C


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", type=Path, default=DEFAULT_PROTOCOL, help="protocol file")
    parser.add_argument(
        "--stage", default=ALL_STAGES, help="a stage of the protocol file, or all (default)"
    )
    parser.add_argument("--trainer", choices=TRAINERS, default="cpu", help="trainer=cpu or gpu")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/evidence/runs"),
        help="protocol folder; its run folders' small records are tracked by git (docs/evidence/.gitignore)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for every cell, after the protocol's own (repeatable)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="show each cell's state, run nothing"
    )
    parser.add_argument(
        "--cell",
        type=int,
        metavar="N",
        help="only cell N of the selection, as --dry-run numbers them (a SLURM array task)",
    )
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="train nothing: run the pending evaluations of the done cells",
    )
    parser.add_argument(
        "--report", action="store_true", help="write the report (every stage), run nothing"
    )
    parser.add_argument("--results", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--csv", type=Path, help="one line per cell (default: <out>/cells.csv)")
    parser.add_argument("--figures", type=Path, help="figure folder (default: <out>/figures)")
    args = parser.parse_args(argv)
    args.csv = args.csv or args.out / "cells.csv"
    args.figures = args.figures or args.out / "figures"
    return args


def command(args: argparse.Namespace, stage: str) -> str:
    """The command line that runs (and continues) ``stage`` with these arguments."""
    parts = ["--stage", stage, "--trainer", args.trainer, "--out", str(args.out)]
    if args.protocol != DEFAULT_PROTOCOL:
        parts += ["--protocol", str(args.protocol)]
    for override in args.override:
        parts += ["--override", override]
    if args.cell is not None:
        parts += ["--cell", str(args.cell)]
    if args.evaluate_only:
        parts.append("--evaluate-only")
    return "python scripts/evidence.py " + " ".join(shlex.quote(p) for p in parts)


def one_cell(cells: list[ProtocolCell], number: int, reporting: bool, stage: str) -> ProtocolCell:
    """Cell ``number`` (from 1) of ``cells``, for ``--cell``.

    Raises:
        ConfigError: with ``--report`` (which covers every cell), or no such cell.
    """
    if reporting:
        raise ConfigError("--cell and --report: the report covers every cell; drop --cell")
    if not 1 <= number <= len(cells):
        raise ConfigError(
            f"--cell {number}: --stage {stage} has {len(cells)} cells, numbered 1 to "
            f"{len(cells)} (--dry-run lists them)"
        )
    return cells[number - 1]


def report(args: argparse.Namespace, protocol, runner: ProtocolRunner) -> None:
    results = gather(runner.cells, runner.states())
    report_command = (
        command(args, ALL_STAGES)
        + " --report"
        + "".join(
            f" --{name} {shlex.quote(str(getattr(args, name)))}"
            for name in ("results", "csv", "figures")
        )
    )
    continue_command = {stage: command(args, stage) for stage in protocol.stages}
    if protocol.report == "variants":
        section = variants_markdown(
            results,
            protocol.metric,
            protocol.name,
            report_command,
            continue_command,
            protocol.epochs_tolerance,
        )
    else:
        # the at-a-glance section first: in a file that has neither, it comes first
        replace_section(
            args.results,
            glance_markdown(results, protocol.metric, report_command, protocol.name),
            f"{protocol.name}_glance",
        )
        section = report_markdown(
            results,
            protocol.metric,
            args.figures,
            args.results,
            report_command,
            continue_command,
            args.out,
            command(args, ALL_STAGES) + " --evaluate-only",
            protocol.name,
        )
    replace_section(args.results, section, protocol.name)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.csv, runs_csv(results))
    done = sum(r.done for r in results)
    sections = (
        f"section {protocol.name}"
        if protocol.report == "variants"
        else f"sections {protocol.name}_glance, {protocol.name}"
    )
    print(
        f"report: {done}/{len(results)} cells done -> {args.results} "
        f"({sections}), {args.csv}, {args.figures}/"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with reported_as_exit():
        protocol = load_protocol(args.protocol)
        stage = ALL_STAGES if args.report else args.stage
        cells = plan_cells(protocol, stage, args.out, args.trainer, args.override)
        if args.cell is not None:
            cells = [one_cell(cells, args.cell, args.report, stage)]
        from mole_lightning.train import route_lightning_logs, train

        runner = ProtocolRunner(
            cells,
            args.out,
            protocol.may_differ,
            command(args, stage),
            train,
            skips_busy_cells=args.cell is None,
            evaluate_only=args.evaluate_only,
        )
        if args.report:
            report(args, protocol, runner)
        elif args.dry_run:
            runner.dry_run()
        else:
            # the cells' log lines (progress every callbacks.progress_log_seconds) on the
            # console too, as a train.py run shows them; each cell's train.log has them
            logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
            route_lightning_logs()
            try:
                counts = runner.run()
            except KeyboardInterrupt:
                print(
                    f"[evidence] interrupted; to continue: {runner.protocol_command}",
                    file=sys.stderr,
                )
                return INTERRUPTED_EXIT_CODE
            return 1 if counts["failed"] or counts["evaluation failed"] else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
