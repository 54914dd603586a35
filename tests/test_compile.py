"""``trainer.compile``: every method's hot path traces as one graph of static shapes.

The unit tests compile with dynamo's eager backend (tracing only, exact numerics); the
training run compiles for real with inductor on the CPU through the Lightning Trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter

from mole_lightning.errors import ConfigError
from mole_lightning.methods.mole.synthetic import random_word_graphs
from mole_lightning.models.glue_module import GlueModule
from mole_lightning.train import build_module, train
from tests.conftest import compose, fast_run_overrides

BATCH, SEQ, WORDS = 4, 24, 16
# bench-style rows: a method plus the overrides that make it static
STATIC_METHODS = {
    "lora": ["method=lora"],
    "adapter": ["method=adapter"],
    "mole": ["method=mole"],
    "mole-pruned": ["method=mole"],
    "molex-capacity": [
        "method=molex",
        "method.dispatch=capacity",
        "method.router_init_std=1.0",
        "method.balance_loss=0.01",
    ],
}


def build(name: str) -> GlueModule:
    cfg = compose([*STATIC_METHODS[name], "backbone=tiny-bert", "task=rte"])
    torch.manual_seed(0)
    model = GlueModule(cfg.task, cfg.method, cfg.backbone, cfg.optim)
    if name == "mole-pruned":
        model.encoder.parts["mole"].prune(1)
    return model


def make_batch(model: GlueModule, seed: int) -> dict:
    """Same shapes every seed, different tokens, padding, graphs and routes."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    for row in range(BATCH):
        mask[row, int(torch.randint(SEQ // 2, SEQ + 1, (1,), generator=generator)) :] = 0
    batch = {
        "input_ids": torch.randint(5, 1000, (BATCH, SEQ), generator=generator) * mask,
        "attention_mask": mask,
        "labels": torch.randint(0, 2, (BATCH,), generator=generator),
    }
    if model.needs_graphs:
        batch["word_graphs"] = random_word_graphs(
            BATCH,
            SEQ,
            WORDS,
            min_words=4,
            kinds=tuple(model.encoder.graph_kinds),
            generator=generator,
        )
    return batch


@pytest.mark.parametrize("name", list(STATIC_METHODS))
def test_training_and_eval_trace_without_breaks_or_recompiles(name: str) -> None:
    model = build(name)
    model.eval()
    with torch.no_grad():
        eager = model(make_batch(model, 0))
    torch._dynamo.reset()
    counter = CompileCounter()
    model.encoder.compile_backbone("default", backend=counter, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(model(make_batch(model, 0)), eager, rtol=0, atol=0)
    assert counter.frame_count == 1

    model.train()
    for step in range(3):
        if "mole" in model.encoder.parts:
            model.encoder.parts["mole"].temperature = 1.0 / (step + 1)  # annealing
        batch = make_batch(model, step + 1)
        model.task_loss(model(batch), batch["labels"]).backward()
    assert counter.frame_count == 2, "train mode compiles once, then reuses the graph"
    trained = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trained)


@pytest.mark.slow  # Inductor compiles four graphs: about 80 s of one CPU core
def test_compiled_mole_run_prunes_and_retrains(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Inductor on the CPU through the Trainer; pruning changes the model mid-run."""
    overrides = [
        o
        for o in fast_run_overrides(glue_dir, "rte", "mole", "tiny-bert")
        if not o.startswith("+trainer.limit_train_batches")
    ]
    overrides += [
        "parser=spacy",
        "+trainer.limit_train_batches=4",
        "trainer.max_steps=4",
        "method.prune.after_steps=2",
        "trainer.compile=default",
        "data.pad_to_max_length=true",
        "data.max_length=64",
    ]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    metrics = train(compose(overrides, tmp_path, cache_dir))
    assert metrics["global_step"] == 4 and "val/acc" in metrics
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # train, eval
    assert dict(torch._dynamo.utils.counters["graph_break"]) == {}
    structure = json.loads((tmp_path / "mole_structure.json").read_text())
    assert all(len(layer) == 1 for layer in structure["structure"])


def test_generation_tasks_refuse_compile() -> None:
    cfg = compose(["task=e2e", "method=lora", "backbone=tiny-gpt2", "trainer.compile=default"])
    with pytest.raises(ConfigError, match="beam search grows the sequence"):
        build_module(cfg)
