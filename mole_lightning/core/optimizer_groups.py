"""How a submodule asks for its own optimizer settings: methods declare them
(``optimizer_group()``), the optimizer builder (``mole_lightning.models.optim``) reads
them."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class GroupSettings:
    """Parameters that train with their own learning rate and weight decay.

    A submodule that defines ``optimizer_group() -> GroupSettings | None`` gets them
    (MoLEx's routers: ``method.router_lr`` / ``method.router_weight_decay``).

    Attributes:
        params: the parameters (those that do not train are left out anyway).
        lr: their learning rate (``None``: the run's).
        weight_decay: their weight decay (``None``: the run's); biases and norms get none
            unless ``decay_biases``.
        decay_biases: their biases and norm weights decay too (the MoLEx authors' router
            group: one group of every gate parameter at the router's weight decay).
    """

    params: tuple[nn.Parameter, ...]
    lr: float | None = None
    weight_decay: float | None = None
    decay_biases: bool = False
