"""DDP on CPU (gloo, 2 processes) through the real CLI, against one process on the same
global batch.

Design: both runs use ``trainer=ddp`` (so both read the training set through Lightning's
``DistributedSampler``, whose permutation depends only on the seed and the epoch), one
with 2 processes × batch 4, one with 1 process × batch 8. Rank r's k-th batch holds
positions ``8k + r, 8k + 2 + r, ...`` of that permutation, so the two ranks' k-th batches
together are exactly the single process's k-th batch; DDP averages the two ranks'
gradients, which equals the gradient of the mean loss over the 8 examples. With every
dropout off (LoRA, head, backbone) the two runs must end with the same weights (up to
float rounding from different padding and reduction order) and, on MRPC's 408 dev
examples (even, so the distributed sampler neither drops nor repeats any), the same dev
metrics. This fails if gradients are not all-reduced (each rank would step on its own
half batch: measured max weight difference 1.7e-3 against 1.5e-8 here), if the metric
states are not synchronised (rank 0 would score half the dev set; MRPC dev has 279
positives of 408, so no half has the full set's positive rate and even a constant
predictor's accuracy differs), or if rank 1 reads the token cache before rank 0 has
written it (the first run starts on an empty cache).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}


def train_cli(glue_dir: Path, cache: Path, out: Path, devices: int, batch_size: int) -> Path:
    """One CLI run in ``out``; returns the run directory."""
    args = [
        "train.py",
        "task=mrpc",
        "method=lora",
        "backbone=tiny-bert",
        "seed=3",
        "method.dropout=0",
        "head.dropout=0",
        "+backbone.random_init.hidden_dropout_prob=0",
        "+backbone.random_init.attention_probs_dropout_prob=0",
        f"data.dir={glue_dir}",
        f"data.batch_size={batch_size}",
        "data.eval_batch_size=64",
        "data.num_workers=0",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        f"trainer.devices={devices}",
        "trainer.max_steps=4",
        "+trainer.limit_train_batches=4",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "validate_best=false",
        "logger=csv",
        f"paths.cache_dir={cache}",
        f"hydra.run.dir={out}",
    ]
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def runs(glue_dir: Path, tmp_path_factory) -> dict[int, Path]:
    cache = tmp_path_factory.mktemp("ddp_cache")  # empty: rank 0 writes it while rank 1 waits
    root = tmp_path_factory.mktemp("ddp_runs")
    return {
        2: train_cli(glue_dir, cache, root / "two", devices=2, batch_size=4),
        1: train_cli(glue_dir, cache, root / "one", devices=1, batch_size=8),
    }


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def trained_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]


def test_two_processes_ran_and_rank_zero_wrote_the_run_files(runs: dict[int, Path]) -> None:
    two = runs[2]
    assert (two / "train_ddp_process_1.log").is_file()  # Lightning started the second rank
    info = json.loads((two / "run_info.json").read_text())
    assert info["status"] == "finished" and "ended" in info
    assert metrics(two)["global_step"] == 4
    assert metrics(two)["params/trainable"] == metrics(runs[1])["params/trainable"]


def test_ddp_weights_match_one_process_on_the_same_global_batch(runs: dict[int, Path]) -> None:
    two, one = trained_weights(runs[2]), trained_weights(runs[1])
    assert two.keys() == one.keys() and any("lora_B" in k for k in two)
    for key in two:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    lora_b = [k for k in two if "lora_B" in k]
    assert any(two[k].abs().max() > 1e-4 for k in lora_b)  # training moved the weights


def test_ddp_dev_metrics_match_one_process(runs: dict[int, Path]) -> None:
    two, one = metrics(runs[2]), metrics(runs[1])
    for key in ("val/acc", "val/f1"):
        assert two[key] == pytest.approx(one[key], abs=1e-6), key


def test_ddp_dev_loss_matches_one_process(runs: dict[int, Path]) -> None:
    assert metrics(runs[2])["val/loss"] == pytest.approx(metrics(runs[1])["val/loss"], abs=1e-5)
