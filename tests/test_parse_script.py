"""`scripts/parse.py` warms exactly the graph cache that a graph method's GlueDataModule reads.

The script and the data module share ``graph_store``, ``graph_keys`` and ``graph_texts``
(``mole_lightning.data.datamodule``); if the script's files, keys or texts drifted from the
data module's, the data module below would have to parse (and fails here instead).
"""

from __future__ import annotations

from pathlib import Path

import mole_lightning.graphs.store as store_module
from mole_lightning.core.tasks import get_task
from mole_lightning.data.datamodule import graph_keys, graph_texts
from mole_lightning.data.glue import read_glue_split
from mole_lightning.graphs import GRAPH_KINDS, GraphStore
from mole_lightning.train import build_datamodule, build_module
from scripts.parse import parse_task
from tests.conftest import REPO, compose, run_cli

ROWS = 6


def small_rte(glue_dir: Path, root: Path) -> Path:
    """A glue_data folder holding the header and first ``ROWS`` rows of RTE train and dev."""
    folder = root / "RTE"
    folder.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        with open(glue_dir / "RTE" / name, encoding="utf-8", newline="") as f:
            lines = [next(f) for _ in range(ROWS + 1)]
        (folder / name).write_text("".join(lines), encoding="utf-8", newline="")
    return root


def test_parse_script_warms_the_datamodules_graph_cache(glue_dir, tmp_path, monkeypatch):
    data = small_rte(glue_dir, tmp_path / "glue_data")
    cache = tmp_path / "cache"
    overrides = ["task=rte", "parser=spacy", f"data.dir={data}", f"paths.cache_dir={cache}"]

    # the real command line, run from another folder than the repository, its Hydra run
    # folder conf/hydra/default.yaml's (the mole_run_dir resolver) under a temporary log dir
    run = run_cli(
        [str(REPO / "scripts" / "parse.py"), *overrides, f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=tmp_path,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(list((tmp_path / "logs").glob("*/runs/*/.hydra/config.yaml"))) == 1
    assert "parsed and cached" in run.stdout, run.stdout
    spec = get_task("rte")
    keys = [k for split in ["train", *spec.dev_splits] for k in graph_keys(spec, split, {})]
    files = sorted((cache / "graphs").glob("*.npz"))
    assert sorted(f.name.split(".")[0] for f in files) == sorted(keys)
    stamps = {f: f.stat().st_mtime_ns for f in files}

    def no_parsing(cfg):
        raise AssertionError("the graph cache scripts/parse.py wrote was not found")

    monkeypatch.setattr(store_module, "build_parser", no_parsing)
    cfg = compose([*overrides, "method=mole", "backbone=minilm"])
    datamodule = build_datamodule(cfg, build_module(cfg))  # as train.py builds it
    assert datamodule.graph_kinds == [k for k in cfg.method.experts if k in GRAPH_KINDS]
    datamodule.prepare_data()
    datamodule.setup("fit")
    for split in datamodule.splits:
        assert [len(graphs) for graphs in datamodule.graphs[split]] == [ROWS, ROWS]
    assert sorted((cache / "graphs").glob("*.npz")) == files
    assert {f: f.stat().st_mtime_ns for f in files} == stamps

    # a second run of the script finds every file in the cache too
    rows = parse_task(cfg)
    assert [r["source"] for r in rows] == ["cache"] * len(keys)
    assert sorted(r["file"] for r in rows) == files


def test_parse_bench_parses_the_texts_training_parses(glue_dir, tmp_path):
    """`scripts/parse_bench.py` reads the split as the data module does (a sentence with
    spaces around it is parsed stripped, as in training): the data module's own texts find
    the cache file it wrote."""
    data = small_rte(glue_dir, tmp_path / "glue_data")
    train_tsv = data / "RTE" / "train.tsv"
    header, first, *rest = train_tsv.read_text(encoding="utf-8").splitlines(keepends=True)
    index, sentence, *others = first.split("\t")
    train_tsv.write_text(
        "".join([header, "\t".join([index, f"  {sentence} ", *others]), *rest]), encoding="utf-8"
    )
    cache = tmp_path / "cache"
    run = run_cli(
        [str(REPO / "scripts" / "parse_bench.py"), "--data-dir", str(data), "--task", "rte"]
        + ["--limit", "4", "--cache-dir", str(cache)],
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "texts               4 (4 distinct" in run.stdout, run.stdout
    cfg = compose(["task=rte", "parser=spacy", f"data.dir={data}", "method=mole"])
    spec = get_task("rte")
    examples = read_glue_split(spec, "train", data)[:4]
    texts = graph_texts(examples, graph_keys(spec, "train", {})[0])
    assert texts[0] == sentence
    graphs = GraphStore(cfg.parser, cache, list(GRAPH_KINDS)).load("bench-rte-train-4", texts)
    assert len(graphs) == 4

    wrong = run_cli(
        [str(REPO / "scripts" / "parse_bench.py"), "--task", "rte", "--split", "dev"]
        + ["--cache-dir", str(cache)],
        cwd=tmp_path,
    )
    assert wrong.returncode == 2 and "rte has train, validation" in wrong.stderr
