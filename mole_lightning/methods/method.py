"""What a PEFT method is to the framework: its options (a ``MethodConfig`` dataclass), how
it turns a backbone into a ``TunedEncoder``, and the callbacks its training needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback
from torch import nn

from mole_lightning.methods.encoder import TunedEncoder


@dataclass
class MethodConfig:
    """The options every method has; a method's dataclass extends it with its own.

    The fields of a method's dataclass are the keys of its ``method`` node, each with its
    type and default written there only: ``conf/method/<name>.yaml`` composes them from
    Hydra's ConfigStore (``register_conf``) and may set other values.

    Attributes:
        name: the method (its key in ``METHODS``).
        lr: the method's learning rate (the default of ``optim.lr``).
    """

    name: str
    lr: float

    def reads_word_graphs(self) -> bool:
        """Whether batches must carry word graphs (so the run needs a parser)."""
        return False

    def runs_in_phases(self) -> bool:
        """Whether ``train`` fits it through MoLE's exploration and retrain fits
        (``callbacks.mole_phases.fit_mole``) instead of one ``Trainer.fit``."""
        return False

    def causal_lm_refusal(self) -> str | None:
        """Why these options cannot tune a causal LM (GPT-2 blocks, E2E batches without
        word graphs), or ``None`` when they can."""
        return None


def no_callbacks(config: MethodConfig, cfg: DictConfig) -> list[Callback]:
    """A method whose training needs no callbacks of its own."""
    return []


@dataclass(frozen=True)
class Method:
    """One entry of the method registry (``METHODS``).

    Attributes:
        config_cls: the method's options (a ``MethodConfig`` dataclass).
        build: ``(backbone, config, backbone_cfg) -> TunedEncoder``: applies the method
            to a backbone (modified in place).
        callbacks: ``(config, cfg) -> [Callback]``: what the method's training needs
            (``cfg``: the run's whole config).
    """

    config_cls: type[MethodConfig]
    build: Callable[[nn.Module, MethodConfig, DictConfig], TunedEncoder]
    callbacks: Callable[[MethodConfig, DictConfig], list[Callback]] = no_callbacks
