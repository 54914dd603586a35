"""Tensor helpers that keep shapes static (traceable by ``torch.compile``, no host sync)."""

from __future__ import annotations

import torch


def count_indices(index: torch.Tensor, size: int) -> torch.Tensor:
    """``[size]`` float: how often each value in ``[0, size)`` occurs in ``index``.

    ``torch.bincount(index, minlength=size)`` with a fixed output shape: bincount's
    length depends on the largest value, which costs a host sync on an accelerator and a
    graph break under ``torch.compile``. Every value of ``index`` must lie in ``[0, size)``.
    """
    return torch.zeros(size, device=index.device).index_add_(
        0, index, torch.ones(index.shape, device=index.device)
    )
