"""The "how to fix" hints of ``scripts/collect.py --suite`` and ``eval=transfer`` name
commands that work: each suggested command is run here. A suite that does not apply to a
run's task (AdvGLUE on MRPC, transfer without a mapping) says so instead."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mole_lightning.analysis.runs import load_run
from mole_lightning.errors import ConfigError
from mole_lightning.evaluation.cli import evaluate
from mole_lightning.evaluation.collect import suite_cells
from mole_lightning.train import train
from tests.conftest import REPO, compose, fast_run_overrides
from tests.test_evaluate import compose_eval

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}


@pytest.fixture(scope="module")
def runs(glue_dir: Path, cache_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """Two short tiny-bert LoRA runs, MRPC and RTE, with the full dev sets recorded."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for task in ("mrpc", "rte"):
        overrides = [
            *fast_run_overrides(glue_dir, task, "lora", "tiny-bert"),
            "validate_best=false",
        ]
        train(compose(overrides, root / task, cache_dir))
        made[task] = root / task
    return made


def suggested(reason: str) -> list[str]:
    """The command between backticks in a hint, as an argument list for this Python."""
    (command,) = re.findall(r"`(python scripts/evaluate\.py [^`]+)`", reason)
    args = shlex.split(command)
    return [sys.executable, *args[1:], "device=cpu"]


def run_hint(reason: str) -> None:
    done = subprocess.run(
        suggested(reason), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]


def reasons(runs: dict[str, Path], suite: str) -> dict[str, str]:
    _, excluded = suite_cells([load_run(p) for p in runs.values()], suite)
    return {run.task: reason for run, reason in excluded}


def test_collect_transfer_hint_runs_and_fills_the_table(runs: dict[str, Path]) -> None:
    """``--suite transfer_stsb``: the MRPC run's hint is ``eval=transfer
    'suites.transfer.targets=[stsb]'`` (``eval=transfer_stsb`` is no suite); run, it writes
    ``eval_transfer_stsb.json``. RTE has no mapping to STS-B: not applicable."""
    before = reasons(runs, "transfer_stsb")
    assert "eval=transfer_stsb" not in before["mrpc"]
    assert "'suites.transfer.targets=[stsb]'" in before["mrpc"]
    assert before["rte"].startswith("no eval_transfer_stsb.json: not applicable: no transfer ")
    assert "`" not in before["rte"]
    run_hint(before["mrpc"])
    assert (runs["mrpc"] / "eval_transfer_stsb.json").is_file()
    assert set(reasons(runs, "transfer_stsb")) == {"rte"}


def test_collect_advglue_hint_only_where_advglue_has_a_set(runs: dict[str, Path]) -> None:
    """AdvGLUE has no MRPC set: the MRPC run's hint says so; the RTE run's hint runs."""
    before = reasons(runs, "advglue")
    assert before["mrpc"] == (
        "no eval_advglue.json: not applicable: AdvGLUE has no set for task 'mrpc' "
        "(it covers mnli, qnli, qqp, rte, sst2)"
    )
    run_hint(before["rte"])
    assert (runs["rte"] / "eval_advglue.json").is_file()
    assert set(reasons(runs, "advglue")) == {"mrpc"}


def test_transfer_without_targets_names_targets_that_work(
    runs: dict[str, Path], shared_data: Path
) -> None:
    """``eval=transfer`` without targets: on RTE (no mapping from RTE) no command is
    suggested; on MRPC the suggestion lists the mapped targets whose dev data the run's
    data.dir holds (STS-B, not QQP), and runs."""
    rte = compose_eval([f"ckpt_path={runs['rte']}/checkpoints/last.ckpt", "eval=[transfer]"])
    with pytest.raises(ConfigError) as err:
        evaluate(rte)
    assert "no transfer mapping from 'rte' is declared" in str(err.value)
    assert "targets=[" not in str(err.value) and "eval=dev,perturb" in str(err.value)

    mrpc = compose_eval([f"ckpt_path={runs['mrpc']}/checkpoints/last.ckpt", "eval=[transfer]"])
    with pytest.raises(ConfigError) as err:
        evaluate(mrpc)
    message = str(err.value)
    assert "has mappings to qqp, stsb (dev data here for 1)" in message
    assert "'suites.transfer.targets=[stsb]'" in message
    run_hint(message)
    assert (runs["mrpc"] / "eval_transfer_stsb.json").is_file()


def test_dev_and_perturb_hints_run(runs: dict[str, Path]) -> None:
    for suite in ("dev", "perturb"):
        hint = reasons({"rte": runs["rte"]}, suite)["rte"]
        assert f" eval={suite}`" in hint
    run_hint(reasons({"rte": runs["rte"]}, "dev")["rte"])
    assert (runs["rte"] / "eval_dev.json").is_file()
