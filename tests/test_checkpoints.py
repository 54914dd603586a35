"""What trains, what a checkpoint holds, loading it back, and resuming a killed run."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from mole_lightning.data.datamodule import GlueDataModule
from mole_lightning.models.glue_module import GlueModule
from mole_lightning.train import train
from tests.conftest import compose, fast_run_overrides


def build(cfg) -> tuple[GlueModule, GlueDataModule]:
    model = GlueModule(cfg.task, cfg.method, cfg.backbone, cfg.optim)
    dm = GlueDataModule(cfg.task.name, cfg.data, cfg.backbone, cfg.paths.cache_dir)
    return model, dm


@pytest.mark.parametrize("method", ["lora", "adapter", "full"])
def test_methods_train_only_their_own_parameters(
    glue_dir: Path, cache_dir: Path, tmp_path: Path, method: str
) -> None:
    cfg = compose(
        [*fast_run_overrides(glue_dir, "rte", method, "tiny-bert"), "optim.lr=1e-2"],
        tmp_path,
        cache_dir,
    )
    pl.seed_everything(0)
    model, dm = build(cfg)
    before = {k: v.clone() for k, v in model.encoder.backbone.state_dict().items()}
    pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    ).fit(model, datamodule=dm)
    after = model.encoder.backbone.state_dict()
    method_keys = {k for k in after if "lora_" in k}
    changed = {k for k in before if k not in method_keys and not torch.equal(before[k], after[k])}
    if method == "full":
        assert changed, "full fine-tuning left the backbone unchanged"
    else:
        assert not changed, f"{method} changed frozen backbone weights: {sorted(changed)[:3]}"
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all(
            ("lora_" in n) or ("parts" in n) or n.startswith("head.") for n in trainable
        )
    if method == "lora":
        assert any(not torch.equal(before[k], after[k]) for k in method_keys if "lora_B" in k)
    if method == "adapter":
        assert any("parts.adapters" in n for n, p in model.named_parameters() if p.requires_grad)


def test_checkpoint_holds_trained_weights_and_reloads_same_predictions(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    cfg = compose(fast_run_overrides(glue_dir, "rte", "lora", "minilm"), tmp_path, cache_dir)
    train(cfg)
    ckpt_path = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    keys = set(ckpt["state_dict"])
    assert keys and all("lora_" in k or k.startswith("head.") for k in keys), sorted(keys)[:5]
    assert ckpt_path.stat().st_size < 5_000_000  # MiniLM itself is ~90 MB

    reloaded = GlueModule.load_from_checkpoint(ckpt_path).eval()
    fresh, dm = build(cfg)
    fresh.load_state_dict(ckpt["state_dict"], strict=False)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()[0]))
    with torch.no_grad():
        assert torch.allclose(reloaded(batch), fresh.eval()(batch), atol=1e-6)
        untrained, _ = build(cfg)
        assert not torch.allclose(reloaded(batch), untrained.eval()(batch), atol=1e-4)


def test_checkpoint_missing_trained_weights_is_refused(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    cfg = compose(fast_run_overrides(glue_dir, "rte", "lora", "tiny-bert"), tmp_path, cache_dir)
    model, _ = build(cfg)
    with pytest.raises(KeyError, match="lacks trained parameters"):
        model.on_load_checkpoint({"state_dict": {}})


def test_killed_run_resumes_at_the_right_step(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    base = [
        *fast_run_overrides(glue_dir, "rte", "lora", "tiny-bert"),
        "+trainer.limit_train_batches=100",
        "trainer.max_epochs=-1",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "validate_best=false",
    ]
    base = [
        o
        for o in base
        if not o.startswith(("+trainer.limit_train_batches=3", "trainer.max_epochs=1"))
    ]
    straight = train(compose([*base, "trainer.max_steps=6"], tmp_path / "straight", cache_dir))
    interrupted = tmp_path / "interrupted"
    train(compose([*base, "trainer.max_steps=4"], interrupted, cache_dir))  # "killed" after step 4
    ckpt = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    resumed = train(
        compose(
            [*base, "trainer.max_steps=6", f"ckpt_path={interrupted}"],
            tmp_path / "resumed",
            cache_dir,
        )
    )
    assert resumed["global_step"] == straight["global_step"] == 6
    last = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    straight_last = torch.load(
        tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False
    )
    # optimizer and LR schedule continued rather than restarting
    assert (
        last["lr_schedulers"][0]["last_epoch"]
        == straight_last["lr_schedulers"][0]["last_epoch"]
        == 6
    )
    assert last["optimizer_states"][0]["state"][0]["step"] == 6
