"""What ``conf/train.yaml`` needs beyond its files: the config groups whose options are
dataclasses (``method``, ``head``), in Hydra's ConfigStore, and the resolvers of
``conf/hydra/default.yaml`` (``mole_run_dir``, ``mole_swept``).

A dataclass is the one spelling of its options: their names, types and defaults. Each
option file (``conf/method/<name>.yaml``, ``conf/head/default.yaml``) composes the
node stored here (``/method_options/<name>``, ``/head_options/default``: every field
with its default) and may set other values below it. Every entry point that composes
``conf/train.yaml`` calls ``register_conf()`` first (Hydra reports
``Could not find 'method_options/<name>'`` otherwise, and a ``@hydra.main`` script
``Unsupported interpolation type mole_run_dir``).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from mole_lightning.methods import METHODS
from mole_lightning.models.heads import HeadConfig
from mole_lightning.utils.resume import register_run_dir_resolver
from mole_lightning.utils.structured import option_defaults
from mole_lightning.utils.sweep_names import register as register_sweep_names_resolver


def register_conf() -> None:
    """Stores the options of every method in ``METHODS`` and of the head (again after
    ``register_method``), and registers the resolvers of ``conf/hydra/default.yaml``."""
    register_run_dir_resolver()
    register_sweep_names_resolver()
    store = ConfigStore.instance()
    for name, method in METHODS.items():
        store.store(group="method_options", name=name, node=option_defaults(method.config_cls))
    store.store(group="head_options", name="default", node=option_defaults(HeadConfig))
