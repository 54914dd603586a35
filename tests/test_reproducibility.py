"""Same seed, same result: two CPU runs with one seed give identical dev metrics and
identical trained weights, ``seed=0`` seeds too, and unseeded runs do differ (so the
comparison can fail).

The runs share one process, one after another, with the global RNGs disturbed between
them: a run that skipped seeding (the template bug ``if cfg.seed:`` drops ``seed=0``)
would start from another RNG state and give other weights. Dropout stays on (0.1), so
the forward passes consume random numbers too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mole_lightning.train import train
from tests.conftest import compose, fast_run_overrides


def run(
    glue_dir: Path, cache_dir: Path, out: Path, seed: str
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Trains tiny-bert + LoRA on RTE for 3 steps; returns the metrics and the trained weights."""
    torch.manual_seed(torch.seed())  # a fresh, unpredictable global state before every run
    overrides = [*fast_run_overrides(glue_dir, "rte", backbone="tiny-bert"), f"seed={seed}"]
    metrics = train(compose(overrides, out, cache_dir))
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]
    return metrics, state


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and any("lora_A" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_seed_zero_twice_identical_and_unseeded_runs_differ(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    first, first_w = run(glue_dir, cache_dir, tmp_path / "a", "0")
    second, second_w = run(glue_dir, cache_dir, tmp_path / "b", "0")
    assert first["val/acc"] == second["val/acc"] and first["val/loss"] == second["val/loss"]
    assert first["train/loss"] == second["train/loss"]
    assert_same_weights(first_w, second_w)

    other, other_w = run(glue_dir, cache_dir, tmp_path / "c", "1")
    assert not torch.equal(other_w["head.out.weight"], first_w["head.out.weight"])

    loose, loose_w = run(glue_dir, cache_dir, tmp_path / "d", "null")
    loose2, loose2_w = run(glue_dir, cache_dir, tmp_path / "e", "null")
    assert not torch.equal(loose_w["head.out.weight"], loose2_w["head.out.weight"])
    assert loose["train/loss"] != pytest.approx(loose2["train/loss"], abs=1e-7)
