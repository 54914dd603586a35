"""One call of a transformer layer, replayed on another layer and a subset of examples.

A routed layer ``t`` is called by its encoder as ``layer(hidden_states, attention_mask,
...)`` (BERT / RoBERTa / MiniLM / DeBERTa-v2) or ``block(hidden_states, cache,
attention_mask, ...)`` (GPT-2). MoLEx runs a chosen layer ``j`` with exactly the same
arguments, restricted to the examples that chose ``j``. ``LayerCall.bind`` sorts every
argument of the call into one role:

* the **hidden states**: the first parameter of ``forward``;
* the **KV cache**, found by what it is, whatever its name (transformers renamed it from
  ``layer_past`` to ``past_key_value(s)`` to ``cache``): a ``transformers.Cache``, a
  legacy tuple of past key/value tensors, or a parameter annotated as a ``Cache``. The
  chosen layer gets ``None`` there, so it neither reads nor writes layer ``t``'s cache;
* **per-example** tensors (``PER_EXAMPLE_ARGUMENTS``), index-selected along dim 0 when it
  has the batch size (a dim-0 size of 1 broadcasts and passes unchanged);
* **shared** tensors (``SHARED_ARGUMENTS``: DeBERTa's relative positions and embeddings,
  the cache position), passed unchanged;
* plain values (``None``, flags, numbers, strings), passed unchanged.

A tensor argument under any other name is refused with ``ConfigError``: whether it holds
one row per example decides whether it must be index-selected, and a guess would compute
something else without a word after the next rename in transformers.
"""

from __future__ import annotations

import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Cache

from mole_lightning.errors import ConfigError

PER_EXAMPLE_ARGUMENTS = frozenset(
    {
        "attention_mask",
        "encoder_hidden_states",
        "encoder_attention_mask",
        "position_ids",
        "query_states",
    }
)
"""Layer arguments that hold one row per example along dim 0."""
SHARED_ARGUMENTS = frozenset({"relative_pos", "rel_embeddings", "cache_position"})
"""Tensor layer arguments that are the same for every example."""
PLAIN_VALUES = (type(None), bool, int, float, str)
"""Argument types passed unchanged whatever their name."""


def is_cache_annotation(annotation: Any) -> bool:
    """Whether a parameter annotation names a ``transformers.Cache`` (alone, in a union or
    ``Optional``, or as a string under postponed evaluation)."""
    if annotation is inspect.Parameter.empty:
        return False
    if isinstance(annotation, str):
        return re.search(r"\b\w*Cache\b", annotation) is not None
    if isinstance(annotation, type):
        return issubclass(annotation, Cache)
    return any(is_cache_annotation(arg) for arg in typing.get_args(annotation))


def is_cache_value(value: Any) -> bool:
    """Whether ``value`` is a KV cache: a ``transformers.Cache``, or a legacy past of
    key/value tensors ``[batch, heads, seq, head_dim]`` (one layer's ``(key, value)``
    pair, or a tuple of such pairs)."""
    if isinstance(value, Cache):
        return True
    if not isinstance(value, (tuple, list)) or not value:
        return False
    return all(
        (isinstance(item, torch.Tensor) and item.dim() == 4) or is_cache_value(item)
        for item in value
    )


def cached_length(cache: Any, layer_index: int) -> int:
    """Tokens held for layer ``layer_index`` by ``cache`` (``0`` for ``None``)."""
    if cache is None:
        return 0
    if isinstance(cache, Cache):
        return cache.get_seq_length(layer_index)
    first = cache[0]
    pair = first if isinstance(first, torch.Tensor) else cache[layer_index]
    return pair[0].shape[-2]


def layer_hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    """Hidden states ``[batch, seq, hidden]`` of a layer's output (a tensor, or a tuple
    whose first item they are, as DeBERTa-v2's ``(hidden, attention)``)."""
    return output[0] if isinstance(output, tuple) else output


def replace_hidden(output: torch.Tensor | tuple, hidden: torch.Tensor) -> torch.Tensor | tuple:
    """Returns ``output`` with its hidden states replaced by ``hidden``."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@dataclass
class LayerCall:
    """The arguments of one layer call, flattened to ``name -> value``, and their roles.

    Attributes:
        hidden_name: name of the first parameter (the layer input ``hidden_states``).
        arguments: every argument by name, ``**kwargs`` entries included.
        cache_names: names of the arguments that are the KV cache.
        layer_name: the layer's class name, for error messages.
    """

    hidden_name: str
    arguments: dict[str, Any]
    cache_names: tuple[str, ...]
    layer_name: str

    @classmethod
    def bind(cls, layer: nn.Module, args: tuple, kwargs: dict[str, Any]) -> LayerCall:
        """Binds ``layer(*args, **kwargs)`` to the names of ``layer.forward`` and finds
        the KV cache among them.

        Raises:
            ConfigError: ``forward`` takes ``*args``, or a tensor argument has a name
                that is neither per-example nor shared (see the module docstring).
        """
        layer_name = type(layer).__name__
        signature = inspect.signature(layer.forward)
        bound = signature.bind(*args, **kwargs)
        arguments: dict[str, Any] = {}
        annotated_cache: set[str] = set()
        for name, value in bound.arguments.items():
            parameter = signature.parameters[name]
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)
            elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                raise ConfigError(
                    f"{layer_name}.forward takes *{name}; MoLEx cannot replay its calls"
                )
            else:
                arguments[name] = value
                if is_cache_annotation(parameter.annotation):
                    annotated_cache.add(name)
        hidden_name = next(iter(signature.parameters))
        cache_names = tuple(
            name
            for name, value in arguments.items()
            if name != hidden_name and (name in annotated_cache or is_cache_value(value))
        )
        call = cls(hidden_name, arguments, cache_names, layer_name)
        call._check_roles()
        return call

    def _check_roles(self) -> None:
        known = {self.hidden_name, *self.cache_names, *PER_EXAMPLE_ARGUMENTS, *SHARED_ARGUMENTS}
        for name, value in self.arguments.items():
            if name not in known and not isinstance(value, PLAIN_VALUES):
                raise ConfigError(
                    f"{self.layer_name}.forward got a {type(value).__name__} as '{name}', an "
                    "argument MoLEx does not know: it cannot tell whether it holds one row per "
                    "example (index-selected for a chosen layer) or is shared; add the name to "
                    "PER_EXAMPLE_ARGUMENTS or SHARED_ARGUMENTS in "
                    "mole_lightning/methods/molex/layer_call.py"
                )

    @property
    def hidden_states(self) -> torch.Tensor:
        """The layer input ``[batch, seq, hidden]``."""
        return self.arguments[self.hidden_name]

    @property
    def cache(self) -> Any:
        """The KV cache passed to the layer, or ``None``."""
        return next(
            (self.arguments[n] for n in self.cache_names if self.arguments[n] is not None), None
        )

    def run(self, layer: nn.Module, rows: torch.Tensor | None) -> torch.Tensor:
        """Runs ``layer`` with this call's arguments on the examples ``rows``, without
        the KV cache.

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
        for name in self.cache_names:
            arguments[name] = None
        if rows is not None:
            for name in (self.hidden_name, *PER_EXAMPLE_ARGUMENTS):
                value = arguments.get(name)
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
                    arguments[name] = value.index_select(0, rows)
        hidden = arguments.pop(self.hidden_name)
        return layer_hidden(layer.forward(hidden, **arguments))
