"""LoRA on the q and v slices of GPT-2's fused c_attn (the MoLEx authors' E2E setting)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel

from mole_lightning.errors import ConfigError
from mole_lightning.methods import build_encoder

BACKBONE = OmegaConf.create({"lora_target_modules": ["c_attn"], "lora_fan_in_fan_out": True})


def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(
        GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=50, n_positions=32)
    )


def method(name: str = "lora", **extra) -> OmegaConf:
    return OmegaConf.create(
        {"name": name, "r": 4, "lora_alpha": 32, "dropout": 0.0, "target_modules": None, **extra}
    )


def test_q_and_v_slices_follow_the_equation_and_k_stays_frozen():
    model = gpt2()
    frozen = [
        (b.attn.c_attn.weight.clone(), b.attn.c_attn.bias.clone()) for b in model.transformer.h
    ]
    encoder = build_encoder(model, method(lora_qkv_slices=["q", "v"]), BACKBONE)
    trainable = {n: p for n, p in encoder.named_parameters() if p.requires_grad}
    assert len(trainable) == 2 * 2 * 2  # blocks x (q, v) x (A, B)
    assert sum(p.numel() for p in trainable.values()) == 2 * 2 * 4 * (32 + 32)
    x = torch.randn(3, 5, 32)
    for block, (w, b) in zip(model.transformer.h, frozen, strict=True):
        lora = block.attn.c_attn
        with torch.no_grad():
            for p in lora.lora_B.values():
                p.normal_()
        a_q, b_q, a_v, b_v = lora.lora_A["q"], lora.lora_B["q"], lora.lora_A["v"], lora.lora_B["v"]
        plain = x @ w + b
        expected = torch.cat(
            [
                plain[..., :32] + 8.0 * (x @ a_q.t() @ b_q.t()),
                plain[..., 32:64],
                plain[..., 64:] + 8.0 * (x @ a_v.t() @ b_v.t()),
            ],
            dim=-1,
        )
        torch.testing.assert_close(lora(x), expected, atol=1e-5, rtol=0)


def test_molex_over_sliced_lora_trains_q_and_v():
    model = gpt2().train()
    encoder = build_encoder(model, method("molex", lora_qkv_slices=["q", "v"], alpha=0.5), BACKBONE)
    ids = torch.randint(0, 50, (2, 7))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in encoder.named_parameters() if "lora_B" in n}
    assert len(grads) == 4 and all(g is not None and g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"lora_qkv_slices": ["q", "o"]}, "lora_qkv_slices"),
        ({"lora_qkv_slices": ["q"], "target_modules": ["c_proj_x"]}, "no module named"),
        ({"lora_qkv_slices": ["q"], "target_modules": ["c_attn", "c_proj"]}, "one fused"),
    ],
)
def test_sliced_lora_config_errors(extra, match):
    with pytest.raises(ConfigError, match=match):
        build_encoder(gpt2(), method(**extra), BACKBONE)
