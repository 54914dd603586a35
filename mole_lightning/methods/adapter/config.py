"""Options of ``method=adapter``; also the settings of MoLE's MLP expert."""

from __future__ import annotations

from dataclasses import dataclass

from mole_lightning.methods.method import MethodConfig


@dataclass
class AdapterConfig(MethodConfig):
    """A parallel bottleneck adapter in every layer (it reads the attention output and is
    added before the residual + LayerNorm); the backbone stays frozen.

    Attributes:
        bottleneck: size of the down-projection.
        dropout: dropout on the adapter's output.
        scaling: factor on the adapter's output (the MoLE authors use 4.0).
        layer_norm: apply a LayerNorm to the input first (MoLE authors' MLP expert).
        zero_down_bias: the down-projection's bias starts at zero (the MoLE authors' MLP
            expert); ``False``: PyTorch's default ``nn.Linear`` init.
    """

    name: str = "adapter"
    lr: float = 1.0e-3
    bottleneck: int = 64
    dropout: float = 0.1
    scaling: float = 1.0
    layer_norm: bool = False
    zero_down_bias: bool = False

    def causal_lm_refusal(self) -> str | None:
        return "parallel adapters hook the BERT-style layer 'output' block GPT-2 blocks lack"
