"""One call of a transformer layer, replayed on another layer and a subset of examples.

A routed layer ``t`` is called by its encoder as ``layer(hidden_states, attention_mask,
...)`` (BERT / RoBERTa / MiniLM / DeBERTa-v2) or ``block(hidden_states,
past_key_values, attention_mask, ...)`` (GPT-2). MoLEx runs a chosen layer ``j`` with
exactly the same arguments, restricted to the examples that chose ``j``: per-example
tensors (named in ``BATCHED_ARGUMENTS``) are index-selected along the batch, shared
tensors (DeBERTa's relative positions and embeddings) pass unchanged, and the KV cache is
left out, so the chosen layer neither reads nor writes layer ``t``'s cache.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

BATCHED_ARGUMENTS = (
    "attention_mask",
    "encoder_hidden_states",
    "encoder_attention_mask",
    "position_ids",
    "query_states",
)
"""Per-example layer arguments: index-selected along dim 0 when it has the batch size
(a dim-0 size of 1 broadcasts and passes unchanged)."""
CACHE_ARGUMENTS = ("past_key_values", "past_key_value", "layer_past")
"""KV-cache arguments, replaced by ``None`` in a chosen layer's call."""


def layer_hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    """Hidden states ``[batch, seq, hidden]`` of a layer's output (a tensor, or a tuple
    whose first item they are, as DeBERTa-v2's ``(hidden, attention)``)."""
    return output[0] if isinstance(output, tuple) else output


def replace_hidden(output: torch.Tensor | tuple, hidden: torch.Tensor) -> torch.Tensor | tuple:
    """Returns ``output`` with its hidden states replaced by ``hidden``."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@dataclass
class LayerCall:
    """The arguments of one layer call, flattened to ``name -> value``.

    Attributes:
        hidden_name: name of the first parameter (the layer input ``hidden_states``).
        arguments: every argument by name, ``**kwargs`` entries included.
    """

    hidden_name: str
    arguments: dict[str, Any]

    @classmethod
    def bind(cls, layer: nn.Module, args: tuple, kwargs: dict[str, Any]) -> LayerCall:
        """Binds ``layer(*args, **kwargs)`` to the names of ``layer.forward``."""
        signature = inspect.signature(layer.forward)
        bound = signature.bind(*args, **kwargs)
        arguments: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)
            elif signature.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL:
                raise TypeError(
                    f"{type(layer).__name__}.forward takes *{name}; MoLEx cannot replay it"
                )
            else:
                arguments[name] = value
        return cls(hidden_name=next(iter(signature.parameters)), arguments=arguments)

    @property
    def hidden_states(self) -> torch.Tensor:
        """The layer input ``[batch, seq, hidden]``."""
        return self.arguments[self.hidden_name]

    @property
    def cache(self) -> Any:
        """The KV cache passed to the layer, or ``None``."""
        return next(
            (self.arguments[n] for n in CACHE_ARGUMENTS if self.arguments.get(n) is not None), None
        )

    def run(self, layer: nn.Module, rows: torch.Tensor | None) -> torch.Tensor:
        """Runs ``layer`` with this call's arguments on the examples ``rows``.

        Args:
            layer: the chosen layer (same class as the routed one). Its ``forward`` is
                called directly, so layer-level hooks (MoLEx's own, transformers' output
                recorders) do not fire again; submodule hooks and LoRA layers do.
            rows: ``[m]`` example indices, or ``None`` for the whole batch.

        Returns:
            ``[m or batch, seq, hidden]`` hidden states of ``layer``.
        """
        batch = self.hidden_states.shape[0]
        arguments = dict(self.arguments)
        for name in CACHE_ARGUMENTS:
            if name in arguments:
                arguments[name] = None
        if "use_cache" in arguments:
            arguments["use_cache"] = False
        if rows is not None:
            for name in (self.hidden_name, *BATCHED_ARGUMENTS):
                value = arguments.get(name)
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
                    arguments[name] = value.index_select(0, rows)
        hidden = arguments.pop(self.hidden_name)
        return layer_hidden(layer.forward(hidden, **arguments))
