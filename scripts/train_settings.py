"""Training speed of one cell under CPU settings: precision, threads, workers, batching.

    python scripts/train_settings.py                          # RTE, LoRA, MiniLM, 60 steps
    python scripts/train_settings.py --task cola --steps 100 --repeats 3
    python scripts/train_settings.py --out docs/results.md    # append the table

Every variant is a real ``train.py`` run on the task's real data (tokenized cache, the
real DataLoader and Trainer) for ``--steps`` optimizer steps with validation off; each
runs in its own subprocess (its own peak memory) and the variants run interleaved,
``--repeats`` rounds, so a load change on the machine hits them alike. Samples/s is the
run's ``throughput.json`` (training time only, the first epoch's start included); the
table gives the median over rounds, the step time it implies, the peak resident memory
and the ratio of samples/s to the first variant. Dev scores are not measured here: a
setting that changes the numerics (bf16) or the batches (length grouping) needs a full
cell of ``scripts/evidence.py`` to show that the score holds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mole_lightning.reporting import markdown_table
from mole_lightning.utils.machine import machine_record

REPO = Path(__file__).resolve().parent.parent

# name -> train.py overrides on top of the common ones (the first is the baseline)
VARIANTS: dict[str, list[str]] = {
    "fp32 / 2 threads / 2 workers": [],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
    "1 thread": ["threads=1"],
    "0 workers": ["data.num_workers=0"],
    "1 worker": ["data.num_workers=1"],
    "length-grouped": ["data.group_by_length=true"],
}


def run_variant(common: list[str], extra: list[str], out_dir: Path) -> dict[str, float]:
    """One ``train.py`` run; returns samples/s and the child's peak RSS (MiB)."""
    cmd = [sys.executable, str(REPO / "train.py"), *common, *extra, f"hydra.run.dir={out_dir}"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, unlike RUSAGE_CHILDREN
    returncode = os.waitstatus_to_exitcode(status)
    if returncode != 0:
        raise SystemExit(
            f"train.py failed ({returncode}) for {' '.join(extra) or 'the baseline'}:\n"
            f"{stderr[-3000:]}"
        )
    record = json.loads((out_dir / "throughput.json").read_text())
    return {"samples_per_s": record["train_samples_per_s"], "peak_mib": usage.ru_maxrss / 1024}


def measure(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """``{variant: [one record per round]}``, the variants interleaved round by round."""
    common = [
        f"task={args.task}",
        f"method={args.method}",
        f"backbone={args.backbone}",
        f"data.dir={args.data_dir}",
        "trainer=cpu",
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"trainer.max_steps={args.steps}",
        "trainer.max_epochs=-1",
        "+trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "validate_best=false",
        f"seed={args.seed}",
        f"data.batch_size={args.batch_size}",
    ]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.variants}
    with tempfile.TemporaryDirectory(prefix="train_settings_") as tmp:
        for round_ in range(args.repeats):
            for name in args.variants:
                started = time.perf_counter()
                out = Path(tmp) / f"{len(results[name])}-{abs(hash(name))}"
                record = run_variant(common, VARIANTS[name], out)
                results[name].append(record)
                print(
                    f"round {round_ + 1}/{args.repeats} {name}: "
                    f"{record['samples_per_s']:.1f} samples/s "
                    f"({time.perf_counter() - started:.0f}s wall)",
                    flush=True,
                )
    return results


def table(results: dict[str, list[dict[str, float]]], batch_size: int) -> str:
    """Markdown table: median samples/s, step time, peak RSS, ratio to the first row."""
    names = list(results)
    base = statistics.median(r["samples_per_s"] for r in results[names[0]])
    rows = []
    for name in names:
        rates = [r["samples_per_s"] for r in results[name]]
        median = statistics.median(rates)
        rows.append(
            [
                name,
                f"{median:.1f}",
                ", ".join(f"{x:.1f}" for x in rates),
                f"{1000 * batch_size / median:.0f}",
                f"{max(r['peak_mib'] for r in results[name]):.0f}",
                f"{median / base:.2f}x",
            ]
        )
    header = ["setting", "samples/s (median)", "rounds", "step (ms)", "peak RSS (MiB)", "vs first"]
    return markdown_table(header, rows, "lrlrrr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rte")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue_data"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, the first is the baseline; known: {'; '.join(VARIANTS)}",
    )
    parser.add_argument("--out", type=Path, help="append the table (Markdown) to this file")
    args = parser.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    results = measure(args)
    load = os.getloadavg()
    header = (
        f"### Training settings: {args.task}, {args.method}, {args.backbone}, "
        f"batch {args.batch_size}, "
        f"{args.steps} steps x {args.repeats} rounds\n\n"
        f"`python scripts/train_settings.py --task {args.task} --method {args.method} "
        f"--steps {args.steps} --repeats {args.repeats}` on {machine_record()['summary']}, "
        f"{time.strftime('%Y-%m-%d')}, load average at the end "
        f"{load[0]:.1f}\n"
    )
    text = f"{header}\n{table(results, args.batch_size)}\n"
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
