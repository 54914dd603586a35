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
* head ``out(tanh(dense(h[:, 0])))``; one step of transformers' old AdamW from zero
  state (``legacy_adamw_step``: ``eps`` on the uncorrected ``sqrt(v)``, the decay after
  the update), the gate and mix weights at the router's lr / weight decay, biases
  included (the authors' router group decays all of it), other biases and LayerNorms
  without decay.
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

GPUS = {"cola": 2, "mnli": 8, "mrpc": 8, "qnli": 8, "qqp": 8, "rte": 8, "sst2": 8, "stsb": 8}
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
BETAS = (0.9, 0.999)


def legacy_adamw_step(
    p: torch.Tensor,
    g: torch.Tensor | None,
    lr: float,
    wd: float,
    eps: float,
    state: dict | None = None,
    betas: tuple[float, float] = BETAS,
) -> torch.Tensor:
    """One step of transformers' old ``AdamW`` (correct_bias=True), from its equations:
    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p = p - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``, then
    ``p = p - lr wd p``. ``state`` (``t``, ``m``, ``v``) is updated in place; a parameter
    without gradient is left alone."""
    if g is None:
        return p.detach().clone()
    state = {} if state is None else state
    b1, b2 = betas
    t = state.get("t", 0) + 1
    m = b1 * state.get("m", torch.zeros_like(g)) + (1 - b1) * g
    v = b2 * state.get("v", torch.zeros_like(g)) + (1 - b2) * g * g
    state.update(t=t, m=m, v=v)
    step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
    updated = p.detach() - step_size * m / (v.sqrt() + eps)
    return updated - lr * wd * updated


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


def preset_module(task: str, tmp_path, *overrides: str) -> tuple[GlueModule, dict]:
    """The preset's GlueModule on the tiny RoBERTa (head dropout off, no warmup; the
    preset's activation checkpointing), random LoRA B so every layer's LoRA matters, and
    its optimizer settings."""
    cfg = compose([f"experiment=molex_{task}", *overrides], tmp_path)
    head = OmegaConf.merge(cfg.head, {"dropout": 0.0})
    optim = OmegaConf.merge(cfg.optim, {"warmup_ratio": 0.0})
    backbone = OmegaConf.create(
        {**TINY_ROBERTA, "activation_checkpointing": cfg.backbone.activation_checkpointing}
    )
    torch.manual_seed(0)
    module = GlueModule(cfg.task, cfg.method, backbone, optim, head)
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
            settings[id(p)] = (router_lr, router_wd)  # biases decay too
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
        expected[id(p)] = legacy_adamw_step(p, g, lr, wd, EPS)
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
    assert (cfg.method.dropout, cfg.head.init_std) == (0.0, 0.02)
    assert cfg.method.rerun_own_layer_when_chosen and cfg.method.routing == "batch_vote"
    # one optimizer step sees the authors' GPUs' batches; their router group decays its
    # biases; transformers' old AdamW; tutel's cosine embedding init
    assert cfg.trainer.accumulate_grad_batches == GPUS[task]
    assert cfg.method.router_decay_biases and cfg.optim.adamw == "transformers_legacy"
    cosine = AUTHORS[task][1] is not None
    assert cfg.method.get("cosine_embedding_init_std") == (0.01 if cosine else None)


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
    assert m.router_decay_biases and cfg.optim.adamw == "transformers_legacy"
    assert cfg.trainer.accumulate_grad_batches == 1  # microsoft/LoRA: one process, grad_acc 1
    # their data: MR tokens + 50256, word-tokenised references, 512 with token 0, no mask
    d = cfg.data
    assert (d.e2e_format, d.e2e_padding, d.pad_to_max_length, d.max_length) == (
        "authors",
        "authors",
        True,
        512,
    )


def tiny_e2e_module(tmp_path, *overrides: str):
    """The E2E preset's GenerationModule on a tiny 2-block GPT-2 (block 0 routes, both
    blocks are candidates), dropout off, plus ``overrides``; and its config."""
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
            *no_dropout,
            *overrides,
        ],
        tmp_path,
    )
    return GenerationModule(cfg.task, cfg.method, cfg.backbone, cfg.optim), cfg


def test_e2e_preset_matches_the_authors_equations(tmp_path):
    """The E2E preset on a tiny 2-block GPT-2 (block 0 routes, both are candidates, as
    the first 12 of GPT-2 medium's 24): one shared linear gate, ``w = 0.95``, LoRA on the
    q and v slices of ``c_attn``, label smoothing 0.1, balance ``0.01 * L * P_j``, AdamW
    eps 1e-6 with the gate at lr 0.01 / weight decay 0.1 and the rest at 2e-4 / 0.01."""
    module, cfg = tiny_e2e_module(
        tmp_path,
        "method.router_init_std=1.0",
        "optim.warmup_steps=null",
        "optim.warmup_ratio=0.0",
    )
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
    gate_ids = {id(gate.weight): 0.1, id(gate.bias): 0.1}  # the authors decay the bias too
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
        legacy_adamw_step(p, g, *settings[id(p)], eps=1e-6)
        for p, g in zip(params, grads, strict=True)
    ]
    loss.backward()
    optimizer.step()
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, atol=1e-6, rtol=0)


@pytest.mark.parametrize("decay_biases", [True, False])
def test_router_biases_decay_in_the_authors_router_group(decay_biases, tmp_path):
    """One optimizer step of the RTE preset (router lr 0.1, weight decay 0.1): with
    ``router_decay_biases`` (the preset) every router bias is decayed like the authors'
    group decays it, ``b <- b' - lr wd b'`` after the Adam update ``b'``; without it the
    biases only take the Adam update."""
    module, optim = preset_module(
        "rte", tmp_path, f"method.router_decay_biases={str(decay_biases).lower()}"
    )
    routing = module.encoder.parts["molex"]
    biases = [router.gate.bias for router in routing.routers]
    with torch.no_grad():
        for b in biases:
            b.fill_(0.5)
    optimizer = build_optimizer(module, optim, total_steps=10)["optimizer"]
    module.train()
    module.training_step(make_batch("rte"), 0).backward()
    wd = 0.1 if decay_biases else 0.0
    expected = [legacy_adamw_step(b, b.grad, 0.1, wd, EPS) for b in biases]
    undecayed = [legacy_adamw_step(b, b.grad, 0.1, 0.0, EPS) for b in biases]
    optimizer.step()
    for b, e, u in zip(biases, expected, undecayed, strict=True):
        torch.testing.assert_close(b.detach(), e, atol=1e-7, rtol=0)
        # the decay moves a bias of ~0.5 by lr * wd * 0.5 = 0.005 more than the update alone
        gap = (b.detach() - u).abs()
        assert (gap > 0.004).all() if decay_biases else (gap == 0).all()


@pytest.mark.parametrize("task", ["mnli", "qnli", "qqp", "sst2"])
def test_cosine_presets_start_the_embeddings_at_tutels_std(task, tmp_path):
    """tutel's ``CosineTopKGate`` (the authors' cosine router) draws its similarity matrix
    from N(0, 0.01); the projection keeps the router's N(0, 0.02)."""
    proj = AUTHORS[task][1]
    module, _ = preset_module(task, tmp_path)
    router = module.encoder.parts["molex"].routers[0]
    embeddings = router.embeddings.detach()
    assert embeddings.shape == (LAYERS, proj)
    # sample std of 3 * proj >= 288 draws: within 15% of the true std (> 3.5 std errors)
    assert abs(embeddings.std().item() - 0.01) < 0.0015
    assert abs(embeddings.mean().item()) < 0.002
    assert abs(router.proj.weight.std().item() - 0.02) < 0.001  # 32 * proj draws


def test_legacy_adamw_follows_transformers_old_equations_over_steps():
    """``optim.adamw=transformers_legacy`` against ``legacy_adamw_step`` over 5 steps with
    a changing learning rate, two groups (decayed / not), and its gap to torch's AdamW:
    at step 1 torch's ``eps`` is on the corrected ``sqrt(v_hat)``, so with ``|g| ~ eps``
    the two steps differ by a large factor, and torch decays before the update."""
    generator = torch.Generator().manual_seed(0)
    w0 = torch.randn(6, 4, generator=generator)
    b0 = torch.randn(4, generator=generator)
    grads = [
        (torch.randn(6, 4, generator=generator) * 10**-k, torch.randn(4, generator=generator))
        for k in range(5)
    ]
    lrs = [0.1, 0.05, 0.02, 0.01, 0.005]

    def run(kind: str):
        module = torch.nn.Linear(6, 4)
        with torch.no_grad():
            module.weight.copy_(w0.t())
            module.bias.copy_(b0)
        optim = {"lr": 0.1, "weight_decay": 0.3, "eps": 1e-6, "adamw": kind, "schedule": "constant"}
        optimizer = build_optimizer(module, optim, total_steps=5)["optimizer"]
        for (gw, gb), lr in zip(grads, lrs, strict=True):
            for group in optimizer.param_groups:
                group["lr"] = lr
            module.weight.grad, module.bias.grad = gw.t().clone(), gb.clone()
            optimizer.step()
        return module.weight.detach().t(), module.bias.detach()

    w_state, b_state = {}, {}
    w, b = w0.clone(), b0.clone()
    for (gw, gb), lr in zip(grads, lrs, strict=True):
        w = legacy_adamw_step(w, gw, lr, 0.3, 1e-6, w_state)
        b = legacy_adamw_step(b, gb, lr, 0.0, 1e-6, b_state)  # biases: no decay
    legacy_w, legacy_b = run("transformers_legacy")
    torch.testing.assert_close(legacy_w, w, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(legacy_b, b, atol=1e-6, rtol=1e-6)
    torch_w, _ = run("torch")
    assert (torch_w - legacy_w).abs().max() > 1e-3


def test_unknown_adamw_kind_is_a_config_error():
    from mole_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.adamw='sgd'"):
        build_optimizer(torch.nn.Linear(2, 2), {"lr": 0.1, "weight_decay": 0.0, "adamw": "sgd"}, 5)


def e2e_decoding_module(tmp_path, *overrides: str):
    """The E2E preset on the tiny 2-block GPT-2 (block 0 routes, both are candidates),
    dropout off, with a router on which token 0 (the authors' padding) votes block 1
    and other tokens vote block 0: logit_1 - logit_0 = 8 (<h, e_0> / |e_0|^2 - 1/2)."""
    # the tiny GPT-2 has 256 positions, not 512
    module = tiny_e2e_module(tmp_path, "task.first_step_pad_to=16", *overrides)[0].eval()
    model = module.encoder.backbone
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.3, generator=torch.Generator().manual_seed(1))
        e0 = model.transformer.wte.weight[0]
        gate = module.encoder.parts["molex"].routers[0].gate
        gate.weight.zero_()
        gate.weight[1] = 8 * e0 / e0.dot(e0)
        gate.bias.copy_(torch.tensor([0.0, -4.0]))
    return module


def authors_first_step_logits(
    module, prompt: torch.Tensor, pad_to: int
) -> tuple[int, torch.Tensor]:
    """The authors' first decoding call, from its equations: the context right-padded
    with token 0 to ``pad_to``, no attention mask (causal only); at block 0 every token
    votes with the shared linear gate, the batch's most frequent vote ``j`` mixes
    ``0.95 u_0(h) + 0.05 u_j(h)``; the next-token logits are read at the context's last
    position. Returns ``(j, logits [batch, vocab])``."""
    model = module.encoder.backbone
    gate = module.encoder.parts["molex"].routers[0].gate
    length = prompt.shape[1]
    ids = torch.cat([prompt, torch.zeros(len(prompt), pad_to - length, dtype=torch.long)], 1)
    blocks = model.transformer.h
    h = model.transformer.wte(ids) + model.transformer.wpe(torch.arange(pad_to))
    votes = torch.softmax(h @ gate.weight.t() + gate.bias, dim=-1).argmax(-1).flatten()
    j = int(torch.bincount(votes, minlength=2).argmax())
    h = 0.95 * blocks[0].forward(h) + 0.05 * blocks[j].forward(h)
    h = model.transformer.ln_f(blocks[1].forward(h))
    return j, h[:, length - 1] @ model.transformer.wte.weight.t()


@torch.no_grad()
def test_e2e_first_decoding_step_lets_the_padding_vote(tmp_path):
    """``task.first_step_pad_to`` (the preset: 512): the first step's routing is the vote
    of the right-padded context, and the first step's logits are the authors'; without
    it the context alone votes (another block here), as the preset did before."""
    module = e2e_decoding_module(tmp_path)
    model = module.encoder.backbone
    routing = module.encoder.parts["molex"]
    prompt = torch.tensor([[464, 3290, 318, 257, 1332, 50256]])  # 6 tokens: 10 pad votes
    mask = torch.ones_like(prompt)

    j, reference = authors_first_step_logits(module, prompt, 16)
    assert j == 1
    assert module.padded_first_step_choices(prompt, mask) == {0: 1}
    assert not routing.selection_counts.any()  # the vote itself is not counted
    routing.force_choice_on_next_call({0: 1})
    first = model(input_ids=prompt, attention_mask=mask, use_cache=True)
    torch.testing.assert_close(first.logits[:, -1], reference, atol=1e-5, rtol=0)
    assert routing.selection_counts[0].tolist() == [0, 1]
    unpadded = model(input_ids=prompt, attention_mask=mask, use_cache=True)  # once only
    assert routing.selection_counts[0].tolist() == [1, 1]
    assert (unpadded.logits[:, -1] - reference).abs().max() > 1e-4

    # end to end: greedy, one new token = the argmax of the authors' first step
    module.generation.num_beams, module.generation.max_new_tokens = 1, 1
    module.generation.no_repeat_ngram_size = 0
    routing.reset_selection_counts()
    text = module.generate_ids(prompt, mask)
    expected = module.tokenizer.decode([int(reference.argmax())], skip_special_tokens=True)
    assert text == [" ".join(expected.split())]
    assert not routing.selection_counts.any()  # decoding leaves the dev counts alone


def test_e2e_preset_stops_on_628_too(tmp_path, monkeypatch):
    """The preset decodes with eos ``[50256, 628]`` (their gpt2_beam.py); the default task
    with the tokenizer's EOS only."""
    seen = {}

    def fake_generate(**kwargs):
        seen.update(kwargs)
        return kwargs["input_ids"]

    for overrides, eos in (((), [50256, 628]), (("task.eos_token_ids=null",), 50256)):
        module = e2e_decoding_module(tmp_path, *overrides)
        monkeypatch.setattr(module.encoder.backbone, "generate", fake_generate)
        module.generate_ids(torch.tensor([[464, 50256]]), torch.ones(1, 2, dtype=torch.long))
        assert seen["eos_token_id"] == eos
    cfg = compose(["experiment=molex_e2e"], tmp_path)
    assert (list(cfg.task.eos_token_ids), cfg.task.first_step_pad_to) == ([50256, 628], 512)
    assert cfg.task.first_step_pad_id == 0
