"""Attaching parallel modules to a transformer's layers without forking its code.

A parallel adapter reads the attention block's output ``h`` (``[batch, seq, hidden]``),
runs beside the feed-forward block, and its output is added before the residual +
LayerNorm: ``LN(FFN(h) + h + adapter(h))``. Every supported encoder (BERT, RoBERTa,
DeBERTa-v2/v3, MiniLM) ends its layer with an output module called as
``output(intermediate_states, attention_output)`` that computes
``LN(dropout(dense(intermediate_states)) + attention_output)``; a forward pre-hook that
replaces ``attention_output`` with ``attention_output + adapter(attention_output)`` gives
exactly the parallel adapter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """Returns the transformer layer stack of an encoder backbone.

    Raises:
        ValueError: the backbone has no known layer stack.
    """
    for path in (
        "encoder.layer",
        "roberta.encoder.layer",
        "bert.encoder.layer",
        "deberta.encoder.layer",
    ):
        module: nn.Module | None = backbone
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(
        f"{type(backbone).__name__} has no encoder layer stack (looked for encoder.layer); "
        "parallel adapters support BERT, RoBERTa, DeBERTa-v2/v3 and MiniLM backbones"
    )


def _output_module(layer: nn.Module) -> nn.Module:
    output = getattr(layer, "output", None)
    if output is None or not hasattr(output, "LayerNorm"):
        raise ValueError(
            f"{type(layer).__name__} has no 'output' block with a LayerNorm; cannot attach a "
            "parallel adapter to it"
        )
    return output


def attach_parallel(
    backbone: nn.Module, make_module: Callable[[int, int], nn.Module]
) -> tuple[nn.ModuleList, list[RemovableHandle]]:
    """Attaches one parallel module per encoder layer.

    Args:
        backbone: a transformers encoder model.
        make_module: ``(layer_index, hidden_size) -> module`` mapping
            ``[batch, seq, hidden]`` to ``[batch, seq, hidden]``.

    Returns:
        The attached modules (register them on the owner so they train and save) and
        the hook handles.
    """
    layers = encoder_layers(backbone)
    hidden = backbone.config.hidden_size
    modules = nn.ModuleList(make_module(i, hidden) for i in range(len(layers)))
    handles = []
    for layer, module in zip(layers, modules, strict=True):
        handles.append(_output_module(layer).register_forward_pre_hook(_parallel_hook(module)))
    return modules, handles


def _parallel_hook(module: nn.Module):
    def hook(_output: nn.Module, args: tuple[torch.Tensor, ...]):
        intermediate, attention_output = args[0], args[1]
        return (intermediate, attention_output + module(attention_output), *args[2:])

    return hook
