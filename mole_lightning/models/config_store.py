"""The config groups whose options are dataclasses (``method``, ``head``), in Hydra's
ConfigStore.

A dataclass is the one spelling of its options: their names, types and defaults. Each
option file (``conf/method/<name>.yaml``, ``conf/head/default.yaml``) composes the
node stored here (``/method_options/<name>``, ``/head_options/default``: every field
with its default) and may set other values below it. Every entry point that composes
``conf/train.yaml`` calls ``register_options()`` first (Hydra reports
``Could not find 'method_options/<name>'`` otherwise).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from mole_lightning.methods import METHODS
from mole_lightning.models.heads import HeadConfig
from mole_lightning.utils.structured import option_defaults


def register_options() -> None:
    """Stores the options of every method in ``METHODS`` and of the head (again after
    ``register_method``)."""
    store = ConfigStore.instance()
    for name, method in METHODS.items():
        store.store(group="method_options", name=name, node=option_defaults(method.config_cls))
    store.store(group="head_options", name="default", node=option_defaults(HeadConfig))
