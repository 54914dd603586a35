"""The sentence head: first-token or masked-mean pooling, written out by hand."""

from __future__ import annotations

import pytest
import torch

from mole_lightning.errors import ConfigError
from mole_lightning.models.heads import ClassificationHead


def head(pooling: str) -> ClassificationHead:
    torch.manual_seed(0)
    return ClassificationHead(8, 3, dropout=0.0, pooling=pooling).eval()


def by_hand(model: ClassificationHead, pooled: torch.Tensor) -> torch.Tensor:
    x = torch.tanh(pooled @ model.dense.weight.T + model.dense.bias)
    return x @ model.out.weight.T + model.out.bias


def test_first_and_mean_pooling() -> None:
    hidden = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    first, mean = head("first"), head("mean")
    assert torch.allclose(first(hidden, mask), by_hand(first, hidden[:, 0]), atol=1e-6)
    means = torch.stack([hidden[0, :3].mean(0), hidden[1].mean(0)])
    assert torch.allclose(mean(hidden, mask), by_hand(mean, means), atol=1e-6)
    # padding positions do not count, whatever they hold
    noisy = hidden.clone()
    noisy[0, 3:] = 100.0
    assert torch.allclose(mean(noisy, mask), mean(hidden, mask), atol=1e-6)


def test_unknown_pooling_is_refused() -> None:
    with pytest.raises(ConfigError, match="method.head_pooling='cls'.*valid: first, mean"):
        ClassificationHead(8, 2, pooling="cls")
