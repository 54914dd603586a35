"""PEFT methods: each turns a backbone into a ``TunedEncoder``.

One method, one folder (``methods/<name>/``): ``config.py`` (its options: a
``MethodConfig`` dataclass whose fields are the keys of its ``method`` node, each with
its type and default), its modules, ``method.py`` (its registry entry: build and
callbacks) and, where its training needs them, ``callbacks.py``. ``METHODS`` is the one
place a method's name is looked up.
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback
from torch import nn

from mole_lightning.errors import ConfigError
from mole_lightning.methods.adapter.method import METHOD as ADAPTER
from mole_lightning.methods.encoder import TunedEncoder
from mole_lightning.methods.full.method import METHOD as FULL
from mole_lightning.methods.lora.method import METHOD as LORA
from mole_lightning.methods.method import Method, MethodConfig
from mole_lightning.methods.mole.method import METHOD as MOLE
from mole_lightning.methods.molex.method import METHOD as MOLEX
from mole_lightning.utils.structured import dataclass_from_node

METHODS: dict[str, Method] = {
    "full": FULL,
    "lora": LORA,
    "adapter": ADAPTER,
    "mole": MOLE,
    "molex": MOLEX,
}
"""Every method by its name (the value of ``method.name``, the file
``conf/method/<name>.yaml``)."""


def register_method(name: str, method: Method) -> None:
    """Adds a method under ``name``; its options become a config group option once
    ``register_conf`` runs (``conf/method/<name>.yaml`` selects them)."""
    METHODS[name] = method


def method_entry(name: str) -> Method:
    """The registry entry of ``name``.

    Raises:
        ConfigError: unknown method name (the message lists the valid ones).
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_config(node: Mapping | DictConfig | MethodConfig) -> MethodConfig:
    """The options of a ``method`` node as its method's dataclass (a dataclass passes
    through).

    Raises:
        ConfigError: no or an unknown ``name``; an option the method does not have (the
            message lists its options); a value of the wrong type or one the dataclass
            refuses.
    """
    if isinstance(node, MethodConfig):
        return node
    if node.get("name") is None:
        raise ConfigError(f"method node without a name; valid methods: {', '.join(METHODS)}")
    return dataclass_from_node(method_entry(node["name"]).config_cls, node, "method")


def build_encoder(
    backbone: nn.Module, method: Mapping | DictConfig | MethodConfig, backbone_cfg: DictConfig
) -> TunedEncoder:
    """Applies the method of ``method`` (a node or its dataclass) to ``backbone``."""
    config = method_config(method)
    return METHODS[config.name].build(backbone, config, backbone_cfg)


def method_callbacks(config: MethodConfig, cfg: DictConfig) -> list[Callback]:
    """The callbacks the method's training needs (``cfg``: the run's config)."""
    return METHODS[config.name].callbacks(config, cfg)


__all__ = [
    "METHODS",
    "Method",
    "MethodConfig",
    "TunedEncoder",
    "build_encoder",
    "method_callbacks",
    "method_config",
    "method_entry",
    "register_method",
]
