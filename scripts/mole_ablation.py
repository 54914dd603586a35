"""MoLE's structure ablation (claim b): one expert kind in every layer against the learned
structure at the same budget, per task and seed.

    python scripts/mole_ablation.py [--ablation docs/evidence/mole_structures]
        [--learned docs/evidence/runs] [--out DIR]
        [--ablation-protocol conf/evidence_mole_structures.yaml]
        [--learned-protocol conf/evidence.yaml]

The fixed structures are the cells of the ablation protocol in --ablation; the learned
structure is the MoLE cells of the learned protocol (the evidence protocol) in --learned,
for the same tasks and seeds. Writes mole_ablation.md and mole_ablation_<task>.png into
DIR (default: the --ablation folder) and prints the Markdown; runs nothing.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mole_lightning.errors import reported_as_exit
from mole_lightning.evidence.ablation import (
    ABLATION,
    ABLATION_PROTOCOL,
    LEARNED,
    ablation_report,
    ablation_results,
)
from mole_lightning.evidence.protocol import DEFAULT_PROTOCOL, load_protocol
from mole_lightning.utils.run_info import write_text_atomic


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ablation",
        type=Path,
        default=Path("docs/evidence/mole_structures"),
        help="the ablation protocol's folder",
    )
    parser.add_argument(
        "--learned",
        type=Path,
        default=Path("docs/evidence/runs"),
        help="the learned protocol's folder (its MoLE cells are the learned structure)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: --ablation)"
    )
    parser.add_argument("--ablation-protocol", type=Path, default=ABLATION_PROTOCOL)
    parser.add_argument("--learned-protocol", type=Path, default=DEFAULT_PROTOCOL)
    return parser.parse_args(argv)


def evidence_command(protocol: Path, out: Path, stage: str) -> str:
    """The command line that runs ``stage`` of ``protocol`` into ``out`` (the protocol
    file relative to the working directory where it is below it)."""
    shown = protocol.resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())
    parts = ["--protocol", str(shown), "--out", str(out), "--stage", stage]
    return "python scripts/evidence.py " + " ".join(shlex.quote(p) for p in parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or args.ablation
    with reported_as_exit():
        ablation = load_protocol(args.ablation_protocol)
        learned = load_protocol(args.learned_protocol)
        results = ablation_results(ablation, args.ablation, learned, args.learned)
        commands = {
            **{
                (ABLATION, s): evidence_command(ablation.path, args.ablation, s)
                for s in ablation.stages
            },
            **{
                (LEARNED, s): evidence_command(learned.path, args.learned, s)
                for s in learned.stages
            },
        }
        report_command = "python scripts/mole_ablation.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
        )
        lines = ablation_report(results, out, commands, report_command.rstrip())
    text = "\n".join(lines) + "\n"
    write_text_atomic(out / "mole_ablation.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
