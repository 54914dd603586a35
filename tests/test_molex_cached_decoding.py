"""The authors' KV-cache decoding through routed GPT-2 blocks, against the equations:
at every step, block ``t`` and the batch's chosen block ``j`` both read the new tokens
and attend over layer ``t``'s past; ``h <- w u_t + (1 - w) u_j`` and layer ``t``'s past
grows by ``w kv_t + (1 - w) kv_j``; the router votes over the step's new tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from mole_lightning.errors import ConfigError
from mole_lightning.methods.molex import MolexConfig, MolexRouting

W = 0.6


def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=32,
        n_layer=3,
        n_head=2,
        vocab_size=40,
        n_positions=32,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config).eval()


def block_on_past(block, j, h, past):
    """Block ``j`` on the new tokens ``h`` attending over ``past``: (hidden, new k, new v)."""
    cache = DynamicCache(ddp_cache_data=[(None, None)] * j + [past or (None, None)])
    out = block.forward(h, cache, use_cache=True)
    out = out[0] if isinstance(out, tuple) else out
    n = h.shape[1]
    return out, cache.layers[j].keys[..., -n:, :], cache.layers[j].values[..., -n:, :]


def reference_step(model, routing, ids, pasts, start):
    """Logits ``[batch, new, vocab]`` of the new tokens ``ids``; ``pasts`` grows in place;
    returns the chosen layers too."""
    blocks = model.transformer.h
    positions = torch.arange(start, start + ids.shape[1])
    h = model.transformer.wte(ids) + model.transformer.wpe(positions)
    chosen = []
    for t, block in enumerate(blocks):
        own, k_own, v_own = block_on_past(block, t, h, pasts[t])
        votes = routing.routers[t](h).argmax(dim=-1).flatten()
        j = int(torch.bincount(votes, minlength=len(blocks)).argmax())
        chosen.append(j)
        other, k_j, v_j = block_on_past(blocks[j], j, h, pasts[t])
        h = W * own + (1 - W) * other
        k_new, v_new = W * k_own + (1 - W) * k_j, W * v_own + (1 - W) * v_j
        pasts[t] = (
            (k_new, v_new)
            if pasts[t] is None
            else (torch.cat([pasts[t][0], k_new], -2), torch.cat([pasts[t][1], v_new], -2))
        )
    return model.lm_head(model.transformer.ln_f(h)), chosen


def test_cached_decoding_mixes_keys_and_values_like_hidden_states():
    model = gpt2()
    cfg = MolexConfig(
        routing="batch_vote", alpha=W, router_init_std=1.0, decode_with_mixed_kv_cache=True
    )
    routing = MolexRouting.attach(model, cfg)
    ids = torch.randint(0, 40, (3, 6), generator=torch.Generator().manual_seed(1))
    pasts = [None] * 3
    sequence, cache, start = ids, None, 0
    choices = []
    with torch.no_grad():
        for _ in range(4):
            new = sequence[:, start:]
            out = model(input_ids=new, past_key_values=cache, use_cache=True)
            expected, chosen = reference_step(model, routing, new, pasts, start)
            torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=0)
            choices.append(chosen)
            cache, start = out.past_key_values, sequence.shape[1]
            sequence = torch.cat([sequence, out.logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        recomputed = model(input_ids=sequence[:, :-1], use_cache=False).logits[:, -1]
    assert any(j != t for step in choices for t, j in enumerate(step)), "nothing routed"
    # a cache-free recomputation of the same sequence sees no mixed keys / values
    assert not torch.allclose(recomputed, out.logits[:, -1], atol=1e-3)


def test_cached_decoding_needs_batch_vote():
    with pytest.raises(ConfigError, match="decode_with_mixed_kv_cache"):
        MolexConfig(decode_with_mixed_kv_cache=True)
