"""MoLEx replays a layer's call on a chosen layer: the KV cache is found by what it is.

A chosen layer must never receive the routed layer's cache (it would write its keys and
values into that cache), whatever the cache argument is called: transformers renamed
GPT-2's from ``layer_past`` to ``past_key_values`` to ``cache``, and the next rename must
fail loudly or keep working, never compute something else.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import Cache, DynamicCache, GPT2Config, GPT2LMHeadModel

from mole_lightning.errors import ConfigError
from mole_lightning.methods.molex import MolexConfig, MolexRouting
from mole_lightning.methods.molex.layer_call import LayerCall

HIDDEN = 8


def record_calls(layers: nn.ModuleList) -> list[tuple[int, list[object]]]:
    """Wraps each layer's ``forward``; every call appends ``(layer index, the caches among
    its arguments)``, a cache being any ``transformers.Cache`` passed in any position."""
    calls: list[tuple[int, list[object]]] = []
    for index, layer in enumerate(layers):
        original = layer.forward

        @functools.wraps(original)
        def forward(*args, _index=index, _original=original, **kwargs):
            caches = [v for v in (*args, *kwargs.values()) if isinstance(v, Cache)]
            calls.append((_index, caches))
            return _original(*args, **kwargs)

        layer.forward = forward
    return calls


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=16, n_layer=3, n_head=2, vocab_size=50, n_positions=32, bos_token_id=0,
        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("routing", ["sequence", "batch_vote"])
def test_gpt2_chosen_layer_never_gets_the_routed_layers_cache(routing):
    """Installed transformers: layer 0 routes to layer 2 with a live ``DynamicCache``."""
    model = tiny_gpt2()
    router = MolexRouting.attach(model, MolexConfig(alpha=0.5, routing=routing))
    router.force_choice({0: 2, 1: 0, 2: 1})
    calls = record_calls(model.transformer.h)
    ids = torch.randint(1, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    cache = DynamicCache()
    model(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache, use_cache=True)

    # own call of t (with the cache), then the replay of its chosen layer (without)
    assert [index for index, _ in calls] == [0, 2, 1, 0, 2, 1]
    assert [len(caches) for _, caches in calls] == [1, 0, 1, 0, 1, 0]
    assert [cache.get_seq_length(t) for t in range(3)] == [6, 6, 6]


@pytest.mark.parametrize("routing", ["sequence", "batch_vote"])
def test_gpt2_generate_with_cache_is_refused(routing):
    model = tiny_gpt2()
    MolexRouting.attach(model, MolexConfig(alpha=0.5, routing=routing))
    prompt = torch.randint(1, 50, (2, 4), generator=torch.Generator().manual_seed(2))
    with pytest.raises(ConfigError, match="use_cache=False"):
        model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=2, do_sample=False,
            use_cache=True, pad_token_id=0,
        )  # fmt: skip


class CachedLayer(nn.Module):
    """A causal one-head attention layer whose KV cache argument has an unfamiliar name.

    ``forward(hidden [batch, seq, hidden], attention_mask [batch, seq], kv_store)``
    appends its keys and values to ``kv_store`` (a ``transformers.Cache``) and attends
    over everything cached for its own index."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.qkv = nn.Linear(HIDDEN, 3 * HIDDEN)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        kv_store: Cache | None = None,
    ) -> torch.Tensor:
        query, key, value = self.qkv(hidden_states)[:, None].chunk(3, dim=-1)
        if kv_store is not None:
            key, value = kv_store.update(key, value, self.index)
        scores = query @ key.transpose(-1, -2) / HIDDEN**0.5
        new, total = query.shape[-2], key.shape[-2]
        causal = torch.ones(new, total, dtype=torch.bool).tril(total - new)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
        if attention_mask is not None:
            scores = scores.masked_fill(attention_mask[:, None, None, -total:] == 0, -1e9)
        return hidden_states + (scores.softmax(-1) @ value)[:, 0]


class CachedStack(nn.Module):
    """A model MoLEx can attach to: ``encoder.layer`` of ``CachedLayer`` and a config."""

    def __init__(self, num_layers: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.config = SimpleNamespace(hidden_size=HIDDEN)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(CachedLayer(i) for i in range(num_layers))

    def forward(self, hidden_states, attention_mask=None, kv_store=None):
        for layer in self.encoder.layer:
            hidden_states = layer(hidden_states, attention_mask, kv_store=kv_store)
        return hidden_states


def test_cache_under_an_unfamiliar_name_is_found_by_type_and_by_annotation():
    layer = CachedLayer(0)
    hidden = torch.randn(2, 3, HIDDEN)
    store = DynamicCache()
    assert LayerCall.bind(layer, (hidden,), {"kv_store": store}).cache is store
    unused = LayerCall.bind(layer, (hidden,), {"kv_store": None})
    assert unused.cache_names == ("kv_store",) and unused.cache is None

    class LegacyLayer(nn.Module):
        def forward(self, hidden_states, memory=None, attention_mask=None):
            return hidden_states

    legacy = (torch.zeros(2, 1, 4, HIDDEN), torch.zeros(2, 1, 4, HIDDEN))
    call = LayerCall.bind(LegacyLayer(), (hidden, legacy), {})
    assert call.cache_names == ("memory",) and call.cache is legacy


def test_unfamiliar_cache_name_routes_without_writing_another_layers_cache():
    model = CachedStack().eval()
    routing = MolexRouting.attach(model, MolexConfig(alpha=0.5))
    routing.force_choice({0: 2, 1: 2, 2: 0})
    calls = record_calls(model.encoder.layer)
    hidden = torch.randn(2, 5, HIDDEN, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 5, dtype=torch.long)
    store = DynamicCache()
    with torch.no_grad():
        cached = model(hidden, mask, kv_store=store)
        uncached = model(hidden, mask)

    assert [index for index, _ in calls[:6]] == [0, 2, 1, 2, 2, 0]
    assert [len(caches) for _, caches in calls[:6]] == [1, 0, 1, 0, 1, 0]
    assert [store.get_seq_length(t) for t in range(3)] == [5, 5, 5]
    torch.testing.assert_close(cached, uncached)
    with pytest.raises(ConfigError, match="use_cache=False"):
        model(hidden[:, :1], torch.ones(2, 6, dtype=torch.long), kv_store=store)


def test_a_tensor_argument_of_unknown_role_is_refused():
    class RenamedMaskLayer(nn.Module):
        def forward(self, hidden_states, padding_mask=None):
            return hidden_states

    with pytest.raises(ConfigError, match="'padding_mask'.*PER_EXAMPLE_ARGUMENTS"):
        LayerCall.bind(RenamedMaskLayer(), (torch.zeros(2, 3, HIDDEN), torch.ones(2, 3)), {})
    flags = LayerCall.bind(RenamedMaskLayer(), (torch.zeros(2, 3, HIDDEN),), {"padding_mask": None})
    assert flags.cache is None


def test_a_model_without_attention_mask_is_refused_at_attach():
    class NoMaskStack(CachedStack):
        def forward(self, hidden_states, padding=None):
            return hidden_states

    with pytest.raises(ConfigError, match="attention_mask"):
        MolexRouting.attach(NoMaskStack(), MolexConfig())
