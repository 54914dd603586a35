"""MoLEx through the real Trainer on RTE: selection statistics and their export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mole_lightning.models.glue_module import GlueModule
from mole_lightning.train import train
from tests.conftest import compose, fast_run_overrides


@pytest.mark.parametrize(
    "routing,dispatch",
    [("sequence", "grouped"), ("batch_vote", "grouped"), ("sequence", "capacity")],
)
def test_molex_run_exports_layer_selection(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, routing: str, dispatch: str
) -> None:
    overrides = [
        *fast_run_overrides(glue_dir, "rte", "molex", "minilm"),
        f"method.routing={routing}",
        "method.balance_loss=0.01",
        f"method.dispatch={dispatch}",
        "method.capacity_factor=0.5",  # ceil(0.5 * 16 / 6) = 2 rows per layer: overflows
        "method.router_init_std=1.0",
    ]
    metrics = train(compose(overrides, tmp_path, cache_dir))
    assert "val/acc" in metrics
    selection = json.loads((tmp_path / "molex_selection.json").read_text())
    counts = torch.tensor(selection["counts"])
    assert counts.shape == (6, 6) and selection["routed_layers"] == list(range(6))
    seen = 2 * 16  # limit_val_batches=2 of eval_batch_size=16 dev examples, one choice each
    assert counts.sum(dim=1).tolist() == [seen] * 6
    dropped = torch.tensor(selection["dropped_routes"])
    if dispatch == "capacity":
        assert dropped.sum() > 0
        assert metrics["molex/dropped_fraction"] == pytest.approx(
            float(dropped.sum() / counts.sum())
        )
    else:
        assert dropped.sum() == 0 and "molex/dropped_fraction" not in metrics
    frequencies = torch.tensor(selection["values"])
    assert torch.allclose(frequencies.sum(dim=1), torch.ones(6))
    assert (tmp_path / "molex_selection.png").stat().st_size > 0
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert any(k.startswith("encoder.parts.molex.routers") for k in ckpt["state_dict"])
    assert any("lora_" in k for k in ckpt["state_dict"])
    reloaded = GlueModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert reloaded.encoder.method == "molex"
