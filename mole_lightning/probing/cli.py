"""``python scripts/probe.py [ckpt_path=...] [compare_ckpt=...] [dataset=ud|sst2]``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from mole_lightning.core.backbone_source import load_tokenizer
from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.core.tasks import get_task
from mole_lightning.data.glue import read_glue_split
from mole_lightning.errors import ConfigError, reported_as_exit
from mole_lightning.evaluation.checkpoint import (
    check_checkpoint,
    load_module,
    resolve_checkpoint,
)
from mole_lightning.graphs import SentenceGraphs
from mole_lightning.methods.encoder import TunedEncoder
from mole_lightning.models.backbone import load_backbone
from mole_lightning.probing.features import (
    cached_layer_features,
    layer_features,
    model_key,
    sentences_key,
)
from mole_lightning.probing.graphs import gold_graphs, parsed_graphs
from mole_lightning.probing.probes import majority_accuracy, probe_accuracy, probe_split
from mole_lightning.probing.properties import (
    PROPERTIES,
    ProbeData,
    build_probe_data,
    read_conllu,
    spacy_probe_sentences,
)
from mole_lightning.probing.report import format_table, layer_names, plot_heatmap, write_table
from mole_lightning.utils.run_info import RESOLVED_CONFIG


@dataclass
class ProbedModel:
    """A model to probe: its encoder, tokenizer, display name, cache key and run directory
    (``None`` for the pre-trained backbone)."""

    encoder: TunedEncoder
    tokenizer: object
    name: str
    key: str
    run_dir: Path | None


def load_probed_model(ckpt_path: str | None, backbone: DictConfig) -> ProbedModel:
    """The pre-trained ``backbone`` (``ckpt_path`` null or ``pretrained``) or a checkpoint's
    encoder with its method active (MoLEx routing, LoRA weights, MoLE experts)."""
    if ckpt_path in (None, "pretrained"):
        return ProbedModel(
            TunedEncoder(load_backbone(backbone), "pretrained"),
            load_tokenizer(backbone),
            f"{backbone.name} (pre-trained)",
            model_key(None, backbone.name),
            None,
        )
    ckpt, run_dir = resolve_checkpoint(ckpt_path)
    config_path = run_dir / RESOLVED_CONFIG
    run_cfg = OmegaConf.load(config_path) if config_path.is_file() else None
    check_checkpoint(ckpt, run_cfg, config_path)
    module = load_module(ckpt)
    name = f"{module.hparams.task['name']} {module.encoder.method} ({run_dir.name})"
    return ProbedModel(
        module.encoder,
        load_tokenizer(module.config_node("backbone")),
        name,
        model_key(ckpt, module.hparams.backbone["name"]),
        run_dir,
    )


def load_probe_data(cfg: DictConfig) -> ProbeData:
    """The sentences and property labels of ``cfg.dataset``."""
    if cfg.dataset == "ud":
        sentences = read_conllu(cfg.ud_file)[: cfg.max_sentences]
    elif cfg.dataset == "sst2":
        spec = get_task("sst2")
        texts = [e.text_a for e in read_glue_split(spec, "validation", cfg.sst2.dir)]
        sentences = spacy_probe_sentences(texts[: cfg.max_sentences], cfg.sst2.parser_model)
    else:
        raise ConfigError(f"dataset={cfg.dataset!r}; valid: ud, sst2")
    return build_probe_data(sentences, cfg.seed)


def probe_graphs(cfg: DictConfig, data: ProbeData, kinds: list[str]) -> list[SentenceGraphs]:
    """``[N]`` word graphs of the probed sentences: from their gold UD trees (``ud``), or
    parsed by spaCy through the graph cache of training (``sst2``)."""
    if cfg.dataset == "ud":
        return gold_graphs(data.parses, kinds)
    parser = {"name": "spacy", "model": cfg.sst2.parser_model}
    return parsed_graphs(data.sentences, parser, cfg.graph_cache_dir, cfg.dataset, kinds)


def probe_table(cfg: DictConfig, model: ProbedModel, data: ProbeData, device: torch.device) -> dict:
    """``{layer or "majority": {property: test accuracy}}`` for one model (a method that
    reads word graphs gets the sentences' graphs, built when features are computed)."""
    num_layers = model.encoder.backbone.config.num_hidden_layers
    key = f"{model.key}/{cfg.dataset}-{sentences_key(data.sentences, cfg.max_length)}"
    kinds = model.encoder.graph_kinds
    features = cached_layer_features(
        Path(cfg.cache_dir),
        key,
        lambda: layer_features(
            model.encoder,
            model.tokenizer,
            data.sentences,
            device,
            cfg.batch_size,
            cfg.max_length,
            probe_graphs(cfg, data, kinds) if kinds else None,
        ),
        num_layers,
    )
    table = {name: {} for name in [*layer_names(num_layers), "majority"]}
    for prop in tqdm(cfg.properties, desc=f"probes ({num_layers + 1} layers each)", leave=False):
        if prop not in PROPERTIES:
            raise ConfigError(f"unknown probe property {prop!r}; valid: {', '.join(PROPERTIES)}")
        labels = data.labels[prop]
        train, test = probe_split(labels, cfg.test_size, cfg.seed)
        y = np.array([label or "" for label in labels])
        table["majority"][prop] = majority_accuracy(y[train], y[test])
        for name, layer in zip(layer_names(num_layers), features, strict=True):
            table[name][prop] = probe_accuracy(layer, y, train, test, cfg.seed, cfg.max_iter)
    return table


def probe(cfg: DictConfig) -> dict[str, dict]:
    """Probes ``cfg.ckpt_path`` (and ``cfg.compare_ckpt``); writes
    ``probe_<dataset>.{json,csv,png}`` and, when comparing, ``probe_<dataset>_diff.*``;
    returns the tables by name."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    start = time.perf_counter()
    data = load_probe_data(cfg)
    counts = {p: sum(label is not None for label in data.labels[p]) for p in cfg.properties}
    print(f"{cfg.dataset}: {len(data.sentences)} sentences; examples per property: {counts}")
    model = load_probed_model(cfg.ckpt_path, cfg.backbone)
    out_dir = Path(cfg.out_dir or model.run_dir or Path("logs/probe") / cfg.backbone.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": model.name,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "test_size": cfg.test_size,
        "examples": counts,
    }
    test_items = {
        p: len(probe_split(data.labels[p], cfg.test_size, cfg.seed)[1])
        for p in cfg.properties
        if p in data.labels
    }
    meta["test_items"] = test_items
    tables = {"probe": probe_table(cfg, model, data, device)}
    stem = out_dir / f"probe_{cfg.dataset}"
    paths = write_table(stem, tables["probe"], meta)
    plot_heatmap(
        tables["probe"],
        f"probe accuracy: {model.name}, {cfg.dataset}",
        stem.with_suffix(".png"),
        test_items,
        cfg.min_test_items,
    )
    print(format_table(tables["probe"]))
    if cfg.compare_ckpt is not None:
        other = load_probed_model(cfg.compare_ckpt, cfg.backbone)
        base = probe_table(cfg, other, data, device)
        diff = {r: {p: tables["probe"][r][p] - base[r][p] for p in base[r]} for r in base}
        tables |= {"compare": base, "diff": diff}
        diff_stem = out_dir / f"probe_{cfg.dataset}_diff"
        paths += write_table(diff_stem, diff, {**meta, "minus": other.name})
        plot_heatmap(
            diff,
            f"probe accuracy: {model.name} minus {other.name}",
            diff_stem.with_suffix(".png"),
            test_items,
            cfg.min_test_items,
            diverging=True,
        )
        print(f"\ndifference ({model.name} minus {other.name}):\n{format_table(diff)}")
    print(
        f"wrote {', '.join(str(p) for p in paths)} and the heatmaps ({time.perf_counter() - start:.0f} s)"
    )
    return tables


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="probe.yaml")
def main(cfg: DictConfig) -> None:
    with reported_as_exit():
        probe(cfg)
