"""Runs written before a key was renamed (``method.head_*`` -> the ``head`` group) stay
what they were: finished evidence cells stay done, and old checkpoints evaluate, load
and resume.

The evidence cells are real: the records of a finished cell of docs/evidence/mole_gate,
and the resolved configs the code before the ``head`` group wrote for the other methods'
cells (tests/assets/before_head_group/README.md). The checkpoints come from a real short
run (tiny-bert, real RTE rows) rewritten into the old layout.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
import yaml

import mole_lightning.utils.config_upgrade as config_upgrade
from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.evaluation.checkpoint import load_module
from mole_lightning.evaluation.cli import evaluate
from mole_lightning.evidence.protocol import compose_cell, load_protocol, plan_cells
from mole_lightning.train import train
from mole_lightning.utils.config_upgrade import upgrade_config
from mole_lightning.utils.resume import resume_config
from scripts.evidence import main as evidence
from tests.conftest import compose, fast_run_overrides
from tests.test_evaluate import compose_eval

BEFORE = Path(__file__).parent / "assets" / "before_head_group"
CONF = Path(CONFIG_DIR)
DONE = "done: finished with this config"


def dry_run(protocol: str, out: Path, capsys) -> dict[str, str]:
    """What ``scripts/evidence.py --dry-run`` says of each cell of ``conf/<protocol>.yaml``
    (``{cell: "done: finished with this config", ...}``)."""
    args = ["--protocol", str(CONF / f"{protocol}.yaml"), "--out", str(out), "--dry-run"]
    assert evidence(args) == 0
    lines = re.findall(r"^\[\d+/\d+\] (\S+) \(\S+\): (.*)$", capsys.readouterr().out, re.M)
    return dict(lines)


def write_finished_cell(cell: Path, resolved: Path, lr: float | None = None) -> None:
    """A finished cell folder holding ``resolved`` as its resolved config (with ``lr``
    as its ``optim.lr`` when given)."""
    cell.mkdir(parents=True)
    config = yaml.safe_load(resolved.read_text())
    if lr is not None:
        config["optim"]["lr"] = lr
    (cell / "resolved_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (cell / "run_info.json").write_text(json.dumps({"status": "finished"}))
    (cell / "metrics.json").write_text(json.dumps({"best/val/mcc": 0.1, "val/mcc": 0.1}))


def test_renamed_keys_move_to_their_new_names() -> None:
    old = {"method": {"name": "molex", "head_dropout": 0.1, "head_init_std": None}}
    assert upgrade_config(old) == {
        "method": {"name": "molex"},
        "head": {"dropout": 0.1, "init_std": None},
    }
    assert old["method"]["head_dropout"] == 0.1  # a copy: the argument is untouched
    both = {"method": {"head_pooling": "mean"}, "head": {"pooling": "first"}}
    assert upgrade_config(both) == {"method": {}, "head": {"pooling": "first"}}


def test_a_finished_cell_from_before_the_head_group_stays_done(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """A cell that finished then (its records as the protocol left them; it ran as the
    lr grid's MoLE cell at 1e-4 and is the gate protocol's group_gate_lr1e-4 now) is
    done; without the mapping of renamed keys it would run again."""
    shutil.copytree(BEFORE / "mole_gate", tmp_path / "mole_gate")
    states = dry_run("evidence_mole_gate", tmp_path / "mole_gate", capsys)
    assert states["cola/group_gate_lr1e-4/seed0"] == DONE
    monkeypatch.setattr(config_upgrade, "RENAMED_KEYS", {})
    states = dry_run("evidence_mole_gate", tmp_path / "mole_gate", capsys)
    assert states["cola/group_gate_lr1e-4/seed0"] == (
        "rerun: config changed since it ran (method.head_dropout, method.head_pooling)"
    )


def test_every_methods_cell_from_before_the_head_group_stays_done(tmp_path: Path, capsys) -> None:
    """lora, adapter, molex (its LoRA and adapter keys now inherited from their
    dataclasses), full, and a cell whose protocol sets the head (``head.pooling=mean``,
    ``method.head_pooling=mean`` when it ran): each is done. A cell whose saved head is
    not the protocol's runs again, naming the renamed key. The protocol's lrs have
    changed since (the lr grid's choices); each cell of conf/evidence.yaml gets today's
    lr of its method, so that the keys the dry run compares differ only in their names."""
    one_per_method = {c.method: c for c in plan_cells(load_protocol(), "all", tmp_path, "cpu")}
    lrs = {method: compose_cell(cell).optim.lr for method, cell in one_per_method.items()}
    for resolved in sorted(BEFORE.glob("*__*.yaml")):
        protocol, task, method, seed = resolved.stem.split("__")
        lr = lrs[method] if protocol == "evidence" else None
        write_finished_cell(tmp_path / protocol / task / method / seed, resolved, lr)
    states = dry_run("evidence", tmp_path / "evidence", capsys)
    for cell in ("cola/lora/seed1", "cola/adapter/seed1", "cola/molex/seed1", "rte/full/seed1"):
        assert states[cell] == DONE, cell
    assert states["rte/lora/seed1"] == "new: no run yet"
    gate = tmp_path / "evidence_mole_gate"
    write_finished_cell(
        gate / "cola" / "gate_lr" / "seed0",
        BEFORE / "evidence_mole_gate__cola__gate_lr_mean_head__seed0.yaml",
    )
    states = dry_run("evidence_mole_gate", gate, capsys)
    assert states["cola/gate_lr_mean_head/seed0"] == DONE
    assert states["cola/gate_lr/seed0"] == "rerun: config changed since it ran (head.pooling)"


def to_before_head_group(run: Path) -> None:
    """Rewrites a run folder as the code before the ``head`` group wrote it: the head's
    options as ``method.head_*`` in ``resolved_config.yaml`` and in every checkpoint's
    ``hyper_parameters`` (``head_init_std`` only where it was set), no ``head`` node."""

    def old_keys(head: dict) -> dict:
        keys = {"head_dropout": head["dropout"], "head_pooling": head["pooling"]}
        return keys | ({"head_init_std": head["init_std"]} if head["init_std"] is not None else {})

    resolved = yaml.safe_load((run / "resolved_config.yaml").read_text())
    resolved["method"].update(old_keys(resolved.pop("head")))
    (run / "resolved_config.yaml").write_text(yaml.safe_dump(resolved))
    for path in (run / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True)
        saved = checkpoint["hyper_parameters"]
        saved["method"].update(old_keys(saved.pop("head")))
        torch.save(checkpoint, path)


def test_a_run_from_before_the_head_group_evaluates_loads_and_resumes(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """A LoRA run with a non-default head (mean pooling, no dropout), rewritten into the
    old layout: its checkpoint loads with that head and the trained weights, ``evaluate``
    reproduces its dev accuracy, and ``ckpt_path=<run>`` resumes it into today's layout."""
    run = tmp_path / "run"
    overrides = [
        *(
            o
            for o in fast_run_overrides(glue_dir, "rte", "lora", "tiny-bert")
            if "limit_val" not in o
        ),
        "head.pooling=mean",
        "head.dropout=0.0",
        "data.max_length=16",
        "data.eval_batch_size=64",
        "validate_best=false",
        "seed=0",
    ]
    train(compose(overrides, run, cache_dir))
    recorded = json.loads((run / "metrics.json").read_text())
    to_before_head_group(run)
    assert "head" not in torch.load(run / "checkpoints" / "last.ckpt")["hyper_parameters"]

    module = load_module(run / "checkpoints" / "last.ckpt")
    assert (module.head.pooling, module.head.dropout.p) == ("mean", 0.0)
    assert module.hparams.head == {"dropout": 0.0, "pooling": "mean"}
    assert "head_pooling" not in module.hparams.method
    weights = torch.load(run / "checkpoints" / "last.ckpt")["state_dict"]
    assert torch.equal(module.head.out.weight, weights["head.out.weight"])

    results = {r.name: r for r in evaluate(compose_eval([f"ckpt_path={run}", "device=cpu"]))}
    assert results["dev"].metrics["val/acc"] == recorded["val/acc"]

    given = [f"ckpt_path={run}", "trainer.max_epochs=2", "resume_allow_changes=true"]
    resumed = train(resume_config(compose(given, cache=cache_dir), given))
    assert resumed["global_step"] == 6
    saved = yaml.safe_load((run / "resolved_config.yaml").read_text())
    assert saved["head"] == {"dropout": 0.0, "pooling": "mean"}
    assert not any(k.startswith("head_") for k in saved["method"])
    assert json.loads((run / "run_info.json").read_text())["status"] == "finished"
