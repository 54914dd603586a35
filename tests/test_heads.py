"""The sentence head: first-token, masked-mean or pooler pooling, written out by hand."""

from __future__ import annotations

import pytest
import torch

from mole_lightning.errors import ConfigError
from mole_lightning.models.heads import ClassificationHead, HeadConfig


def head(pooling: str) -> ClassificationHead:
    torch.manual_seed(0)
    return ClassificationHead(8, 3, HeadConfig(dropout=0.0, pooling=pooling)).eval()


def by_hand(model: ClassificationHead, pooled: torch.Tensor) -> torch.Tensor:
    x = torch.tanh(pooled @ model.dense.weight.T + model.dense.bias)
    return x @ model.out.weight.T + model.out.bias


def test_first_and_mean_pooling() -> None:
    hidden = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    first, mean = head("first"), head("mean")
    assert torch.allclose(first(hidden, mask), by_hand(first, hidden[:, 0]), atol=1e-6)
    means = torch.stack([hidden[0, :3].mean(0), hidden[1].mean(0)])
    assert torch.allclose(mean(hidden, mask), by_hand(mean, means), atol=1e-6)
    # padding positions do not count, whatever they hold
    noisy = hidden.clone()
    noisy[0, 3:] = 100.0
    assert torch.allclose(mean(noisy, mask), mean(hidden, mask), atol=1e-6)


def test_unknown_pooling_is_refused() -> None:
    with pytest.raises(ConfigError, match="head.pooling='cls'.*valid: first, mean, pooler"):
        HeadConfig(pooling="cls")


def test_pooler_head_is_the_backbones_pooler_then_a_linear_layer() -> None:
    """``head.pooling=pooler``, as transformers' BertForSequenceClassification under
    peft: the checkpoint's pooler (dense + tanh on the first token), frozen, then a new
    linear classifier; the only trainable head weights are the classifier's."""
    from transformers import BertConfig, BertModel

    from mole_lightning.methods.encoder import TunedEncoder
    from mole_lightning.models.heads import find_pooler

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
    )
    encoder = TunedEncoder(BertModel(config), "lora")
    pooler = find_pooler(encoder.backbone)
    model = ClassificationHead(8, 3, HeadConfig(dropout=0.0, pooling="pooler"), pooler).eval()
    hidden = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    pooled = torch.tanh(hidden[:, 0] @ pooler.dense.weight.T + pooler.dense.bias)
    expected = pooled @ model.out.weight.T + model.out.bias
    assert torch.allclose(model(hidden, None), expected, atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"out.weight", "out.bias"}
    assert model.dense is None


def test_pooler_head_without_a_pooler_is_refused() -> None:
    with pytest.raises(ConfigError, match="head.pooling=pooler: this backbone has no pooler"):
        ClassificationHead(8, 2, HeadConfig(pooling="pooler"), pooler=None)


def test_pooler_head_in_a_real_run(glue_dir, cache_dir, tmp_path) -> None:
    """``head.pooling=pooler`` trains end to end (real Trainer, real RTE rows):
    the trainable weights are LoRA's and the classifier's, the dense layer of the
    default head is gone, and the pooler is the backbone's. The checkpoint leaves the
    frozen pooler out, as it leaves out the rest of the backbone; reloading it rebuilds
    the pooler from the source and puts the trained classifier on it."""
    from mole_lightning.models.glue_module import GlueModule
    from mole_lightning.train import build_module, train
    from tests.conftest import compose, fast_run_overrides

    base = fast_run_overrides(glue_dir, "rte", "lora", "tiny-bert")
    first = train(compose(base, tmp_path / "first", cache_dir))
    cfg = compose([*base, "head.pooling=pooler"], tmp_path / "pooler", cache_dir)
    pooled = train(cfg)
    hidden = 32  # conf/backbone/tiny-bert.yaml
    assert pooled["params/trainable"] == first["params/trainable"] - (hidden * hidden + hidden)
    module = build_module(cfg)  # tiny-bert's init has a fixed seed: the weights before training
    saved = torch.load(tmp_path / "pooler" / "checkpoints" / "last.ckpt", weights_only=False)
    weights = saved["state_dict"]
    assert {"head.out.weight", "head.out.bias"} <= set(weights)
    assert module.head.dense is None
    assert module.head.pooler is module.encoder.backbone.pooler  # the backbone's, not a copy
    assert not any(k.startswith(("head.pooler.", "encoder.backbone.pooler.")) for k in weights)
    reloaded = GlueModule.load_from_checkpoint(tmp_path / "pooler" / "checkpoints" / "last.ckpt")
    assert reloaded.head.pooler is reloaded.encoder.backbone.pooler
    for name, before in module.head.pooler.state_dict().items():  # rebuilt from the source
        assert torch.equal(reloaded.head.pooler.state_dict()[name], before), name
    for name in ("weight", "bias"):  # the trained classifier, from the checkpoint
        assert torch.equal(getattr(reloaded.head.out, name), weights[f"head.out.{name}"])
