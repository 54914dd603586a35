"""The ``experiment=molex_<task>`` presets compute what the authors' code computes.

Each preset runs on a tiny random RoBERTa (the preset's method and optimizer settings,
dropout off) against a reference written from the equations of the authors' code:

* layer ``t`` reads ``h``; its router (one per layer, or ONE shared by every layer) scores
  every token, padding included: linear ``h W^T + b``, or cosine
  ``normalize(h P^T + c, dim=1) @ normalize(E, dim=-1)^T * exp(min(s, log 100))`` with the
  projection normalised along the SEQUENCE axis (dim 1 of ``[batch, seq, proj]``);
* each token votes for its argmax, the most frequent vote ``j`` (lowest on ties) serves
  the batch: ``h <- w u_t(h) + (1 - w) u_j(h)``, ``w`` fixed or ``softmax`` of the (one
  shared, or per-layer) learned pair;
* balance loss ``coef * sum_t L * P_j`` with ``P_j`` the mean probability of the winner
  over all tokens;
* head ``out(tanh(dense(h[:, 0])))``; one AdamW step from zero state:
  ``p <- p (1 - lr wd) - lr g / (|g| + eps)``, the gate and mix weights at the router's
  lr / weight decay, biases and LayerNorms without decay.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from mole_lightning.models.glue_module import GlueModule
from mole_lightning.models.optim import build_optimizer
from tests.conftest import compose

AUTHORS = {  # task: (shared router, cosine proj, mix, balance, lr, router lr, router wd, warmup, seed)
    "cola": (True, None, 0.95, 0.01, 4e-4, 5e-5, 0.0, 0.06, 5),
    "mnli": (True, 416, "learned", 0.005, 5e-4, 5e-5, 0.0, 0.06, 0),
    "mrpc": (True, None, "learned", 0.0, 4e-4, 0.1, 0.1, 0.1, 0),
    "qnli": (True, 96, "learned", 0.0, 4e-4, 0.1, 0.1, 0.06, 0),
    "qqp": (True, 384, "learned", 0.001, 5e-4, 0.1, 0.1, 0.06, 0),
    "rte": (False, None, 0.5, 0.001, 5e-4, 0.1, 0.1, 0.06, 10),
    "sst2": (True, 128, 0.5, 0.01, 5e-4, 0.1, 0.1, 0.06, 10),
    "stsb": (False, None, 0.5, 0.001, 4e-4, 0.1, 0.1, 0.06, 0),
}
WEIGHT_DECAY, EPS, LAYERS, PAD = 0.1, 1e-8, 3, 1
TINY_ROBERTA = {
    "name": "tiny-roberta",
    "lora_target_modules": ["query", "value"],
    "random_init": {
        "model_type": "roberta",
        "vocab_size": 50,
        "hidden_size": 32,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 40,
        "pad_token_id": PAD,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    },
}


def preset_module(task: str, tmp_path) -> tuple[GlueModule, dict]:
    """The preset's GlueModule on the tiny RoBERTa (head dropout off, no warmup; the
    preset's activation checkpointing), random LoRA B so every layer's LoRA matters, and
    its optimizer settings."""
    cfg = compose([f"experiment=molex_{task}"], tmp_path)
    method = OmegaConf.merge(cfg.method, {"head_dropout": 0.0})
    optim = OmegaConf.merge(cfg.optim, {"warmup_ratio": 0.0})
    backbone = OmegaConf.create(
        {**TINY_ROBERTA, "activation_checkpointing": cfg.backbone.activation_checkpointing}
    )
    torch.manual_seed(0)
    module = GlueModule(cfg.task, method, backbone, optim)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.3)
    return module, OmegaConf.to_container(optim, resolve=True)


def make_batch(task: str) -> dict:
    generator = torch.Generator().manual_seed(4)
    ids = torch.randint(3, 50, (4, 12), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate([12, 5, 9, 3]):
        mask[row, length:] = 0
    ids = ids.masked_fill(mask == 0, PAD)
    if task == "stsb":
        labels = torch.rand(4, generator=generator) * 5
    else:
        labels = torch.randint(0, 3 if task == "mnli" else 2, (4,), generator=generator)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def router_logits(router: torch.nn.Module, h: torch.Tensor, cosine: bool) -> torch.Tensor:
    """``[batch, seq, L]`` gate logits from the router's raw weights."""
    w = dict(router.named_parameters())
    if not cosine:
        return h @ w["gate.weight"].t() + w["gate.bias"]
    projected = h @ w["proj.weight"].t() + w["proj.bias"]
    projected = projected / projected.norm(dim=1, keepdim=True).clamp(min=1e-12)  # sequence axis
    emb = w["embeddings"] / w["embeddings"].norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return projected @ emb.t() * w["log_inv_temperature"].clamp(max=math.log(100.0)).exp()


def reference(module: GlueModule, batch: dict, task: str):
    """Returns ``(logits, chosen layers, balance loss, loss)`` from the equations."""
    shared, proj, mix, balance, *_ = AUTHORS[task]
    backbone = module.encoder.backbone
    routing = module.encoder.parts["molex"]
    layers = backbone.encoder.layer
    mask = batch["attention_mask"]
    ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    h = backbone.embeddings(input_ids=batch["input_ids"])
    chosen, terms = [], []
    for t in range(LAYERS):
        router = routing.routers[0 if shared else t]
        probs = torch.softmax(router_logits(router, h, proj is not None), dim=-1)
        votes = probs.argmax(dim=-1).flatten()
        j = int(torch.bincount(votes, minlength=LAYERS).argmax())
        chosen.append(j)
        terms.append(LAYERS * probs[..., j].mean())
        if mix == "learned":
            w_own, w_chosen = torch.softmax(routing.mix_logits[0 if shared else t], dim=0)
        else:
            w_own, w_chosen = mix, 1 - mix
        h = w_own * layers[t].forward(h, ext) + w_chosen * layers[j].forward(h, ext)
    head = module.head
    x = torch.tanh(h[:, 0] @ head.dense.weight.t() + head.dense.bias)
    logits = x @ head.out.weight.t() + head.out.bias
    if task == "stsb":
        logits = logits.squeeze(-1)
        task_loss = F.mse_loss(logits, batch["labels"])
    else:
        task_loss = F.cross_entropy(logits, batch["labels"])
    balance_loss = balance * torch.stack(terms).sum()
    return logits, chosen, balance_loss, task_loss + balance_loss


def expected_settings(module: GlueModule, task: str) -> dict[int, tuple[float, float]]:
    """``id(param) -> (lr, weight decay)`` of every parameter that must train."""
    _, _, mix, balance, lr, router_lr, router_wd, *_ = AUTHORS[task]
    routing = module.encoder.parts["molex"]
    router_ids = {id(p) for p in routing.routers.parameters()}
    mix_ids = {id(routing.mix_logits)} if mix == "learned" else set()
    settings = {}
    for name, p in module.named_parameters():
        no_decay = name.endswith(("bias", "LayerNorm.weight"))
        if id(p) in router_ids | mix_ids:
            if id(p) in router_ids and balance == 0:
                continue  # no loss reaches the gate: frozen
            settings[id(p)] = (router_lr, 0.0 if no_decay else router_wd)
        elif "lora_" in name or name.startswith("head."):
            settings[id(p)] = (lr, 0.0 if no_decay else WEIGHT_DECAY)
    return settings


@pytest.mark.parametrize("task", sorted(AUTHORS))
def test_preset_matches_the_authors_equations(task, tmp_path):
    module, optim = preset_module(task, tmp_path)
    batch = make_batch(task)
    routing = module.encoder.parts["molex"]
    for linear in (module.head.dense, module.head.out):  # N(0, 0.02) weights, zero biases
        assert not linear.bias.any() and abs(linear.weight.std().item() - 0.02) < 0.005

    logits_ref, chosen_ref, balance_ref, loss_ref = reference(module, batch, task)
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_ref, params, allow_unused=True)

    module.eval()
    with torch.no_grad():
        logits = module(batch)
    torch.testing.assert_close(logits, logits_ref.detach(), atol=1e-6, rtol=0)
    chosen = [int(routing.selection_counts[t].argmax()) for t in range(LAYERS)]
    assert chosen == chosen_ref
    assert routing.selection_counts.sum(dim=1).tolist() == [4] * LAYERS

    module.train()
    loss = module.training_step(batch, 0)
    aux = module.encoder.aux_loss()
    torch.testing.assert_close(
        torch.tensor(0.0) if aux is None else aux, balance_ref.detach(), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(loss, loss_ref.detach(), atol=1e-6, rtol=0)

    optimizer = build_optimizer(module, optim, total_steps=10)["optimizer"]
    settings = expected_settings(module, task)
    got = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert got == settings
    expected = {}
    for p, g in zip(params, grads, strict=True):
        lr, wd = settings[id(p)]
        step = 0 if g is None else lr * g / (g.abs() + EPS)
        expected[id(p)] = p.detach() * (1 if g is None else 1 - lr * wd) - step
    loss.backward()
    optimizer.step()
    for p in params:
        torch.testing.assert_close(p.detach(), expected[id(p)], atol=1e-6, rtol=0)


@pytest.mark.parametrize("task", sorted(AUTHORS))
def test_preset_sets_the_scripts_values(task, tmp_path):
    cfg = compose([f"experiment=molex_{task}"], tmp_path)
    *_, lr, router_lr, router_wd, warmup, seed = AUTHORS[task]
    assert (cfg.seed, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_ratio) == (
        seed,
        lr,
        WEIGHT_DECAY,
        warmup,
    )
    assert (cfg.method.router_lr, cfg.method.router_weight_decay) == (router_lr, router_wd)
    assert (cfg.data.max_length, cfg.data.pad_to_max_length, cfg.data.eval_batch_size) == (
        512,
        True,
        8,
    )
    assert (cfg.method.dropout, cfg.method.head_init_std) == (0.0, 0.02)
    assert cfg.method.rerun_own_layer_when_chosen and cfg.method.routing == "batch_vote"


@pytest.mark.parametrize("task", ["cola", "rte"])
def test_shared_router_is_one_module(task, tmp_path):
    module, _ = preset_module(task, tmp_path)
    routing = module.encoder.parts["molex"]
    shared = AUTHORS[task][0]
    routers = {id(routing.router(t)) for t in routing.routed_layers}
    assert len(routers) == len(routing.routers) == (1 if shared else LAYERS)
    keys = {k.split(".")[1] for k in routing.state_dict() if k.startswith("routers.")}
    assert keys == ({"0"} if shared else {"0", "1", "2"})


def test_e2e_preset_sets_the_scripts_router_and_optimizer(tmp_path):
    cfg = compose(["experiment=molex_e2e"], tmp_path)
    m = cfg.method
    assert (m.shared_router, m.router_lr, m.router_weight_decay) == (True, 0.01, 0.1)
    assert (m.balance_loss_type, m.rerun_own_layer_when_chosen) == ("batch_winner", True)
    assert (cfg.seed, cfg.optim.eps, m.routed_layers) == (96, 1e-6, list(range(12)))
    assert (list(m.target_modules), list(m.lora_qkv_slices)) == (["c_attn"], ["q", "v"])
    assert m.decode_with_mixed_kv_cache and cfg.task.generation_batch_size == 1
    # their data: MR tokens + 50256, word-tokenised references, 512 with token 0, no mask
    d = cfg.data
    assert (d.e2e_format, d.e2e_padding, d.pad_to_max_length, d.max_length) == (
        "authors",
        "authors",
        True,
        512,
    )


def test_e2e_preset_matches_the_authors_equations(tmp_path):
    """The E2E preset on a tiny 2-block GPT-2 (block 0 routes, both are candidates, as
    the first 12 of GPT-2 medium's 24): one shared linear gate, ``w = 0.95``, LoRA on the
    q and v slices of ``c_attn``, label smoothing 0.1, balance ``0.01 * L * P_j``, AdamW
    eps 1e-6 with the gate at lr 0.01 / weight decay 0.1 and the rest at 2e-4 / 0.01."""
    from mole_lightning.models.generation_module import GenerationModule

    no_dropout = [
        f"+backbone.random_init.{k}=0.0" for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")
    ]
    cfg = compose(
        [
            "experiment=molex_e2e",
            "backbone=tiny-gpt2",
            "method.routed_layers=[0]",
            "method.dropout=0.0",
            "method.router_init_std=1.0",
            "optim.warmup_steps=null",
            "optim.warmup_ratio=0.0",
            *no_dropout,
        ],
        tmp_path,
    )
    module = GenerationModule(cfg.task, cfg.method, cfg.backbone, cfg.optim)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.3)
    model = module.encoder.backbone
    routing = module.encoder.parts["molex"]
    with torch.no_grad():
        routing.routers[0].gate.bias.copy_(torch.tensor([0.0, 3.0]))  # most tokens vote block 1
    ids = torch.randint(0, 50257, (3, 10), generator=torch.Generator().manual_seed(6))
    labels = ids.clone()
    labels[:, :4] = -100  # the prompt
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    blocks = model.transformer.h
    h = model.transformer.wte(ids) + model.transformer.wpe(torch.arange(10))
    gate = routing.routers[0].gate
    probs = torch.softmax(h @ gate.weight.t() + gate.bias, dim=-1)
    j = int(torch.bincount(probs.argmax(-1).flatten(), minlength=2).argmax())
    assert j == 1
    own = blocks[0].forward(h)
    h = 0.95 * own + 0.05 * blocks[j].forward(h)
    h = model.transformer.ln_f(blocks[1].forward(h))
    keep = labels[:, 1:] != -100
    logits = h[:, :-1][keep] @ model.transformer.wte.weight.t()
    balance = 0.01 * 2 * probs[..., j].mean()
    loss_ref = F.cross_entropy(logits, labels[:, 1:][keep], label_smoothing=0.1) + balance
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_ref, params)

    module.train()
    loss = module.training_step(batch, 0)
    torch.testing.assert_close(module.encoder.aux_loss(), balance.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(loss, loss_ref.detach(), atol=1e-6, rtol=0)
    optimizer = build_optimizer(
        module, OmegaConf.to_container(cfg.optim, resolve=True), total_steps=10
    )["optimizer"]
    gate_ids = {id(gate.weight): 0.1, id(gate.bias): 0.0}
    settings = {
        id(p): (0.01, gate_ids[id(p)]) if id(p) in gate_ids else (2e-4, 0.01) for p in params
    }
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    assert names == {
        *(
            f"encoder.backbone.transformer.h.{i}.attn.c_attn.lora_{m}.{s}"
            for i in (0, 1)
            for m in "AB"
            for s in "qv"
        ),
        "encoder.parts.molex.routers.0.gate.weight",
        "encoder.parts.molex.routers.0.gate.bias",
    }
    got = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert got == settings and all(g["eps"] == 1e-6 for g in optimizer.param_groups)
    expected = [
        p.detach() * (1 - settings[id(p)][0] * settings[id(p)][1])
        - settings[id(p)][0] * g / (g.abs() + 1e-6)
        for p, g in zip(params, grads, strict=True)
    ]
    loss.backward()
    optimizer.step()
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, atol=1e-6, rtol=0)
