"""Pre-parse a GLUE task (or a custom one: task=custom data.train_file=...) into cached word
graphs and report counts and throughput.

    python scripts/parse.py task=rte parser=spacy data.dir=../shared/data/glue_data paths.cache_dir=/tmp/c

Takes the same Hydra overrides as train.py. A second run finds the cache and says so.
"""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig

from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.core.tasks import task_spec
from mole_lightning.data.custom import resolve_task
from mole_lightning.data.datamodule import (
    graph_keys,
    graph_store,
    graph_texts,
    read_split,
    task_splits,
)
from mole_lightning.graphs import GRAPH_KINDS
from mole_lightning.models.config_store import register_conf

register_conf()  # the method and head options and the resolvers conf/train.yaml needs


def parse_task(cfg: DictConfig) -> list[dict]:
    """Parses (or finds in the cache) every split and text column of ``cfg.task``.

    The cache files, keys and texts are the ``GlueDataModule``'s own (``graph_store``,
    ``graph_keys``, ``graph_texts``), so a training run with the same overrides finds
    them and parses nothing.
    """
    spec = task_spec(resolve_task(cfg.task, cfg.data))
    store = graph_store(cfg.parser, cfg.paths.cache_dir, list(GRAPH_KINDS))
    rows = []
    for split in task_splits(spec, cfg.data):
        examples = read_split(spec, split, cfg.data)
        for key in graph_keys(spec, split, cfg.data):
            texts = graph_texts(examples, key)
            start = time.perf_counter()
            parsed = store.prepare(key, texts)
            graphs = store.load(key, texts)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "split": split,
                    "column": key.rsplit("-", 1)[-1],
                    "sentences": len(texts),
                    "words": sum(g.num_words for g in graphs),
                    "edges": {k: sum(len(g.edges[k][1]) for g in graphs) for k in GRAPH_KINDS},
                    "seconds": seconds,
                    "source": "parsed" if parsed else "cache",
                    "file": store.path(key),
                }
            )
    return rows


def report(rows: list[dict], parser: str) -> str:
    lines = [
        f"{'split':<24}{'column':<8}{'sentences':>10}{'words':>10}"
        + "".join(f"{k[:10]:>11}" for k in GRAPH_KINDS)
        + f"{'seconds':>9}{'sent/s':>9}  source",
    ]
    for r in rows:
        lines.append(
            f"{r['split']:<24}{r['column']:<8}{r['sentences']:>10,}{r['words']:>10,}"
            + "".join(f"{r['edges'][k]:>11,}" for k in GRAPH_KINDS)
            + f"{r['seconds']:>9.2f}{r['sentences'] / max(r['seconds'], 1e-9):>9.0f}  {r['source']}"
        )
    size = sum(r["file"].stat().st_size for r in rows)
    cached = all(r["source"] == "cache" for r in rows)
    lines.append(
        f"parser {parser}: {'loaded everything from the cache' if cached else 'parsed and cached'}; "
        f"cache {size / 2**20:.1f} MiB in {rows[0]['file'].parent}"
    )
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train.yaml")
def main(cfg: DictConfig) -> None:
    print(report(parse_task(cfg), cfg.parser.name))


if __name__ == "__main__":
    main()
