"""What an offline W&B run holds: the full resolved config, the final and ``best/*``
metrics in its summary, the kept MoLE structure as a table after the prune (and no gate
weights after it), and ``csv/metrics.csv`` beside it.

wandb 0.31 (wandb-core) writes no ``files/config.yaml`` or ``files/wandb-summary.json``
for an offline run: they are made from the run's transaction log (``run-<id>.wandb``)
when it is synced. This test reads that log with wandb's own protobuf records, which is
what ``wandb sync`` uploads; the logged table is a file under ``files/media``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pandas as pd
import yaml

from tests.conftest import REPO, fast_run_overrides, run_cli

BLOCK, HEADER = 32768, 7  # the transaction log's LevelDB-style framing


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``run-<id>.wandb`` transaction log, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    chunks, pending, at = [], b"", HEADER
    while at + HEADER <= len(data):
        left = BLOCK - at % BLOCK
        if left < HEADER:
            at += left
            continue
        _, length, kind = struct.unpack("<IHB", data[at : at + HEADER])
        if kind == 0 and length == 0:  # the padding at a block's end
            at += left
            continue
        chunk, at = data[at + HEADER : at + HEADER + length], at + HEADER + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
    records = []
    for chunk in chunks:
        record = pb.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records


def key_of(item) -> str:
    """A record item's key; a nested value (a logged table) flattened as ``key.field``."""
    return item.key or ".".join(item.nested_key)


def offline_run(run_dir: Path) -> dict:
    """The config, summary and history rows of the run's offline W&B run, as ``wandb
    sync`` would upload them."""
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    (log,) = folder.glob("run-*.wandb")
    config, summary, history = {}, {}, []
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({key_of(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({key_of(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            summary.update({key_of(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "history":
            history.append({key_of(i): json.loads(i.value_json) for i in record.history.item})
    return {"folder": folder, "config": config, "summary": summary, "history": history}


def test_offline_wandb_run_holds_config_summary_structure_and_csv(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    overrides = [
        o
        for o in fast_run_overrides(glue_dir, "rte", "mole", "tiny-bert")
        if not o.startswith(("trainer.max_epochs", "+trainer.limit_train_batches", "logger="))
    ]
    run = run_cli(
        [
            "train.py",
            *overrides,
            "parser=spacy",
            "logger=wandb",
            "trainer.max_epochs=-1",
            "trainer.max_steps=4",
            "+trainer.limit_train_batches=100",
            "trainer.val_check_interval=2",
            "method.prune.after_steps=2",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.cache_dir={cache_dir}",
        ],
        cwd=REPO,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    wandb = offline_run(run_dir)

    # the full resolved config, not only the module's task, method, backbone and optim
    resolved = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())
    config = {k: v for k, v in wandb["config"].items() if k != "_wandb"}
    assert set(config) == set(resolved)
    for key in resolved:
        assert config[key] == resolved[key], key
    assert config["trainer"]["max_steps"] == 4 and config["parser"]["name"] == "spacy"

    # the final metrics and the best checkpoint's, as metrics.json holds them
    metrics = json.loads((run_dir / "metrics.json").read_text())
    summary = wandb["summary"]
    assert {"best/val/acc", "best/val/loss", "val/acc", "params/trainable"} <= set(summary)
    for key, value in metrics.items():
        assert summary[key] == value, key

    # the structure kept at the prune, as a table; no gate weights logged after it
    assert summary["mole/structure/pruned_at_step"] == 2
    assert summary["mole/structure/table._type"] == "table-file"
    kept = json.loads(
        (wandb["folder"] / "files" / summary["mole/structure/table.path"]).read_text()
    )
    structure = json.loads((run_dir / "mole_structure.json").read_text())["structure"]
    assert kept["columns"] == ["layer", "kept", "syntactic", "semantic", "sequential", "mlp"]
    assert [row[1] for row in kept["data"]] == [", ".join(layer) for layer in structure]
    gate_steps = [
        row["trainer/global_step"]
        for row in wandb["history"]
        if any(k.startswith("mole/gate/") for k in row)
    ]
    assert gate_steps and max(gate_steps) < 2

    # csv/metrics.csv beside the W&B logger (scripts/plot_runs.py reads it)
    logged = pd.read_csv(run_dir / "csv" / "metrics.csv")
    assert "train/loss" in logged and logged["val/acc"].notna().any()
