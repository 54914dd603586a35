"""Training and inference cost of every method on the same backbone, batch and length.

    python scripts/bench.py --quick                  # a CPU minute: MiniLM, batch 8, length 64
    python scripts/bench.py --batch 32 --seq 128     # CUDA when present (bf16 autocast there)
    python scripts/bench.py --data-path              # + tokenize/parse/cache cost of SST-2 train

Each method runs in its own subprocess (so peak memory is its own) on a synthetic batch:
random token ids, every position real, and for MoLE random word graphs with about two
edges per word of each kind (``random_word_graphs``). Step time is the median over
``--steps`` optimizer steps after ``--warmup``; samples/s = batch / step time. The table's
last columns are ratios to LoRA (step time; > 1 means slower than LoRA).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

from mole_lightning.reporting import markdown_table

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

METHODS = ["lora", "full", "adapter", "mole", "mole-pruned", "molex", "molex-capacity"]
# bench rows that are a method with extra overrides (the checkpointed rows are not in the
# default list: pick them with --methods)
VARIANTS = {
    "mole-pruned": ("mole", []),  # pruned to top-1 per layer after building
    "molex-capacity": ("molex", ["method.dispatch=capacity"]),  # static-shape dispatch
    "lora-checkpointed": ("lora", ["backbone.activation_checkpointing=true"]),
    "molex-checkpointed": ("molex", ["backbone.activation_checkpointing=true"]),
}


def compose_method(method: str, backbone: str, *overrides: str):
    """The project's own SST-2 config of ``method`` or of a bench row in ``VARIANTS``, with
    ``overrides`` last."""
    from hydra import compose, initialize_config_dir

    from mole_lightning.models.config_store import register_conf

    register_conf()
    name, extra = VARIANTS.get(method, (method, []))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            config_name="train.yaml",
            overrides=[
                f"method={name}",
                f"backbone={backbone}",
                "task=sst2",
                "paths.output_dir=/tmp/bench",
                *extra,
                *overrides,
            ],
        )


def synthetic_batch(model, batch: int, seq: int, device):
    import torch

    from mole_lightning.methods.mole.synthetic import random_word_graphs

    generator = torch.Generator().manual_seed(0)
    vocab = model.encoder.backbone.config.vocab_size
    out = {
        "input_ids": torch.randint(1000, vocab, (batch, seq), generator=generator),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long),
        "labels": torch.randint(0, 2, (batch,), generator=generator),
    }
    if model.needs_graphs:
        max_words = max(int(seq * 0.75), 2)
        out["word_graphs"] = random_word_graphs(
            batch,
            seq,
            max_words,
            min_words=max_words // 2,
            kinds=tuple(model.encoder.graph_kinds),
            generator=generator,
        )
    return {k: v.to(device) for k, v in out.items()}


def measure(method: str, args) -> dict:
    """Runs in the worker subprocess: builds the model, times training and inference."""
    import torch

    from mole_lightning.models.glue_module import GlueModule
    from mole_lightning.models.optim import build_optimizer

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    cfg = compose_method(method, args.backbone)
    model = GlueModule(cfg.task, cfg.method, cfg.backbone, cfg.optim, cfg.head).to(device)
    if method == "mole-pruned":
        model.encoder.parts["mole"].prune(1)
    if args.compile:
        model.encoder.compile_backbone(args.compile)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = build_optimizer(model, cfg.optim, 10_000)["optimizer"]
    batch = synthetic_batch(model, args.batch, args.seq, device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # the module's own training_step, as the Trainer calls it; outside a Trainer its
    # self.log calls return at once
    warnings.filterwarnings("ignore", message="You are trying to `self.log")

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = model.training_step(batch, 0)
        loss.backward()
        optimizer.step()

    def timed(fn, steps: int) -> list[float]:
        times = []
        for _ in range(steps):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return times

    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timed(train_step, args.warmup)
    step = statistics.median(timed(train_step, args.steps))
    peak = (
        torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )

    model.eval()

    def infer() -> None:
        with torch.no_grad(), autocast:
            model(batch)

    timed(infer, max(args.warmup // 2, 1))
    infer_step = statistics.median(timed(infer, args.steps))
    return {
        "method": method,
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "trainable": trainable,
        "step_ms": step * 1e3,
        "train_sps": args.batch / step,
        "infer_sps": args.batch / infer_step,
        "peak_mib": peak / 2**20,
        "peak_kind": "GPU allocated" if device.type == "cuda" else "process RSS",
    }


def run_worker(method: str, args) -> dict:
    """Measures one method in a fresh subprocess; returns its row (or the error)."""
    cmd = [sys.executable, __file__, "--worker", method, *sys.argv[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"method": method, "error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


BENCH_COLUMNS = [
    "method",
    "trainable params",
    "step (ms)",
    "train samples/s",
    "infer samples/s",
    "peak memory (MiB)",
    "step time / LoRA",
    "train throughput / LoRA",
]


def format_table(rows: list[dict]) -> str:
    """One row per method (a failed one says why), with its ratios to LoRA's row."""
    base = next((r for r in rows if r["method"] == "lora" and "error" not in r), None)
    cells = []
    for r in rows:
        if "error" in r:
            cells.append([r["method"], f"failed: {r['error']}", *[""] * 6])
            continue
        cells.append(
            [
                r["method"],
                f"{r['trainable']:,}",
                f"{r['step_ms']:.1f}",
                f"{r['train_sps']:.1f}",
                f"{r['infer_sps']:.1f}",
                f"{r['peak_mib']:.0f}",
                f"{r['step_ms'] / base['step_ms']:.2f}x" if base else "n/a",
                f"{r['train_sps'] / base['train_sps']:.2f}x" if base else "n/a",
            ]
        )
    return markdown_table(BENCH_COLUMNS, cells, "l" + "r" * 7)


def data_path_cost(args) -> str:
    """Tokenize + parse (spaCy) + graph build of SST-2 train, then the cached reload."""
    import shutil
    import tempfile

    from mole_lightning.data.datamodule import GlueDataModule
    from mole_lightning.graphs import GRAPH_KINDS

    cache = Path(tempfile.mkdtemp(prefix="mole-bench-cache-"))
    cfg = compose_method(
        "mole",
        args.backbone,
        f"data.dir={args.data_dir}",
        "data.max_length=128",
        "data.num_workers=0",
        "parser=spacy",
        f"parser.n_process={args.parse_procs}",
    )
    try:
        plain = GlueDataModule("sst2", cfg.data, cfg.backbone, cache / "plain")
        start = time.perf_counter()
        plain.prepare_data()
        tokenize = time.perf_counter() - start
        dm = GlueDataModule(
            "sst2",
            cfg.data,
            cfg.backbone,
            cache / "graphs",
            parser=cfg.parser,
            graph_kinds=list(GRAPH_KINDS),
        )
        start = time.perf_counter()
        dm.prepare_data()
        parse = time.perf_counter() - start
        start = time.perf_counter()
        dm.setup("fit")
        reload = time.perf_counter() - start
        sentences = sum(len(ds) for ds in dm.datasets.values())
        size = sum(p.stat().st_size for p in (cache / "graphs").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return markdown_table(
        ["data path (SST-2 train + dev)", "value"],
        [
            ["sentences", f"{sentences:,}"],
            ["tokenize + cache (s)", f"{tokenize:.1f}"],
            [
                f"tokenize + spaCy parse + graphs + cache (s), n_process={args.parse_procs}",
                f"{parse:.1f} ({sentences / parse:.0f} sentences/s)",
            ],
            ["cached reload of tokens + graphs (s)", f"{reload:.1f}"],
            ["cache size on disk (MiB)", f"{size / 2**20:.1f}"],
        ],
        "lr",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="batch 8, length 64, 3+8 steps (a few CPU minutes)"
    )
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (20; 8 with --quick)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (5; 3 with --quick)"
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--compile", default=None, help="torch.compile mode: default, reduce-overhead, max-autotune"
    )
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    parser.add_argument(
        "--data-path", action="store_true", help="also time tokenize/parse/reload of SST-2"
    )
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue_data"))
    parser.add_argument("--parse-procs", type=int, default=1)
    parser.add_argument("--out", type=Path, help="append the tables (Markdown) to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.seq = 8, 64
    args.steps = args.steps or (8 if args.quick else 20)
    args.warmup = args.warmup or (3 if args.quick else 5)
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return
    methods = args.methods.split(",")
    valid = [*METHODS, *(v for v in VARIANTS if v not in METHODS)]
    unknown = [m for m in methods if m not in valid]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; valid: {', '.join(valid)}")
    rows = [run_worker(m, args) for m in methods]
    device = next((r["device"] for r in rows if "device" in r), "n/a")
    peak = next((r["peak_kind"] for r in rows if "peak_kind" in r), "")
    title = (
        f"backbone {args.backbone}, batch {args.batch}, length {args.seq}, device {device}, "
        f"compile {args.compile or 'off'}, median of {args.steps} steps after {args.warmup}; "
        f"peak memory = {peak}; {platform.node()} {time.strftime('%Y-%m-%d')}"
    )
    text = f"{title}\n\n{format_table(rows)}"
    if args.data_path:
        text += "\n\n" + data_path_cost(args)
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(f"\n`python scripts/bench.py {' '.join(sys.argv[1:])}`\n\n{text}\n")
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
