"""The authors' KV-cache decoding through a routed block: the cache is mixed too.

In the authors' GPT-2 a routed block returns ``w * u_t(z) + (1 - w) * u_j(z)`` and, as
its cached keys / values ("present"), the same mix of block ``t``'s and block ``j``'s,
both computed over layer ``t``'s past. Decoding then feeds one new token at a time: the
router votes over the new tokens only, and later steps attend to mixed keys / values,
which a cache-free recomputation of the whole sequence never sees (so the two decodings
differ; ``use_cache=False`` stays our default).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache

from mole_lightning.methods.molex.layer_call import LayerCall, layer_hidden


def run_on_past_of(
    call: LayerCall,
    layer: nn.Module,
    j: int,
    past: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs layer ``j`` on the call's new tokens, attending over ``past``.

    Args:
        call: routed layer ``t``'s call (its cache arguments are swapped out).
        layer: layer ``j``.
        j: its index (the cache slot it writes).
        past: layer ``t``'s cached ``(keys, values)`` before this call,
            ``[batch, heads, past, head_dim]`` each, or ``None`` on the first call.

    Returns:
        ``(hidden [batch, new, hidden], keys, values [batch, heads, new, head_dim])`` of
        layer ``j`` on the new tokens.
    """
    scratch = DynamicCache(ddp_cache_data=[(None, None)] * j + [past or (None, None)])
    arguments = {**call.arguments, **dict.fromkeys(call.cache_names, scratch)}
    hidden = arguments.pop(call.hidden_name)
    new = hidden.shape[1]
    out = layer_hidden(layer.forward(hidden, **arguments))
    slot = scratch.layers[j]
    return out, slot.keys[..., -new:, :], slot.values[..., -new:, :]


def mix_cached_layer(
    cache: Cache,
    t: int,
    new: int,
    chosen: tuple[torch.Tensor, torch.Tensor],
    own_weight,
    chosen_weight,
) -> None:
    """Replaces the last ``new`` cached keys / values of layer ``t`` (its own, just
    written) by ``own_weight * own + chosen_weight * chosen``."""
    slot = cache.layers[t]
    for name, other in zip(("keys", "values"), chosen, strict=True):
        current = getattr(slot, name)
        mixed = own_weight * current[..., -new:, :] + chosen_weight * other
        setattr(slot, name, torch.cat([current[..., :-new, :], mixed], dim=-2))


def layer_past(cache: Cache, t: int, new: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Layer ``t``'s cached ``(keys, values)`` before its last ``new`` tokens (``None``
    when there were none)."""
    slot = cache.layers[t]
    if slot.get_seq_length() <= new:
        return None
    return slot.keys[..., :-new, :], slot.values[..., :-new, :]
