"""Times MoLE's two RGCN implementations against torch_geometric's RGCNConv.

One RGCN layer, forward + backward, on random word graphs of 32 examples × about 50
words (two random edges per word), width 64, for 2 and 80 relation types; on CPU and,
when available, CUDA. "prepare" is the per-batch graph preparation (adjacency or edge
slots), done once per batch and graph kind and shared by every RGCN layer of the model.
Prints a markdown table (``benchmarks/rgcn.md`` holds a recorded one).

    python benchmarks/rgcn_bench.py [--threads 1] [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch_geometric.nn import RGCNConv

from mole_lightning.methods.mole.rgcn import (
    DenseRelationalGraph,
    RelationalGraphConv,
    SparseRelationalGraph,
)
from mole_lightning.methods.mole.synthetic import random_word_graphs

BATCH, MIN_WORDS, MAX_WORDS, WIDTH = 32, 44, 56, 64


def timed_ms(step: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median wall time of ``step`` in milliseconds after warm-up."""
    for _ in range(5):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench(device: torch.device, num_relations: int, repeats: int) -> dict[str, tuple[float, float]]:
    """``impl -> (prepare ms, forward+backward ms)``; also checks the outputs agree."""
    graphs = random_word_graphs(
        BATCH, 2 * MAX_WORDS + 2, MAX_WORDS, min_words=MIN_WORDS, num_relations=num_relations,
        generator=torch.Generator().manual_seed(0),
    ).to(device)
    edge_index, edge_type = graphs.edges["syntactic"]
    conv = RelationalGraphConv(WIDTH, WIDTH, num_relations).to(device)
    reference = RGCNConv(WIDTH, WIDTH, num_relations, aggr="mean").to(device)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(BATCH, MAX_WORDS, WIDTH, device=device, requires_grad=True)

    results, outputs = {}, {}
    for name, impl in (("dense", DenseRelationalGraph), ("pyg", SparseRelationalGraph)):
        graph = impl(edge_index, edge_type, BATCH, MAX_WORDS, num_relations)
        prepare = timed_ms(lambda impl=impl: impl(edge_index, edge_type, BATCH, MAX_WORDS, num_relations), device, repeats)
        run = timed_ms(lambda graph=graph: conv(x, graph).sum().backward(), device, repeats)
        results[name] = (prepare, run)
        outputs[name] = conv(x, graph).detach()

    flat = x.view(-1, WIDTH)
    results["RGCNConv"] = (0.0, timed_ms(lambda: reference(flat, edge_index, edge_type).sum().backward(), device, repeats))
    outputs["RGCNConv"] = reference(flat, edge_index, edge_type).view(BATCH, MAX_WORDS, WIDTH).detach()
    for name in ("pyg", "RGCNConv"):
        difference = (outputs[name] - outputs["dense"]).abs().max().item()
        assert difference < 1e-4, f"{name} differs from dense by {difference}"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), batch {BATCH} × "
          f"{MIN_WORDS}-{MAX_WORDS} words, width {WIDTH}, ~2 edges per word, median of {args.repeats}\n")
    print("| device | relations | impl | prepare ms (once per batch) | forward+backward ms (per layer) |")
    print("|---|---|---|---|---|")
    for device in devices:
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
        for num_relations in (2, 80):
            for impl, (prepare, run) in bench(device, num_relations, args.repeats).items():
                prepare_text = "-" if impl == "RGCNConv" else f"{prepare:.2f}"
                print(f"| {name} | {num_relations} | {impl} | {prepare_text} | {run:.2f} |")


if __name__ == "__main__":
    main()
