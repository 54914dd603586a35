"""Configs written before an option was renamed, read under today's names.

A run's ``resolved_config.yaml`` and a checkpoint's ``hyper_parameters`` keep the key
names of the version that wrote them. ``RENAMED_KEYS`` maps each old dotted key to its
current one, and ``upgrade_config`` moves them, so a finished run compares equal to the
same run composed today (the evidence protocol skips it), resumes with its saved config,
and its checkpoints load.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

RENAMED_KEYS = {
    # the head's options became the ``head`` config group (conf/head/default.yaml)
    "method.head_dropout": "head.dropout",
    "method.head_pooling": "head.pooling",
    "method.head_init_std": "head.init_std",
}
"""Old dotted key -> the key that holds its value today."""


def upgrade_config(config: Mapping | DictConfig) -> dict[str, Any]:
    """A copy of ``config`` (a plain nested mapping or a config node, interpolations
    kept) with every key of ``RENAMED_KEYS`` under its current name. A current key that
    is already set wins over its old spelling, which is dropped."""
    if OmegaConf.is_config(config):
        upgraded = OmegaConf.to_container(config, resolve=False)
    else:
        upgraded = copy.deepcopy(dict(config))
    for old, new in RENAMED_KEYS.items():
        *parents, leaf = old.split(".")
        node = upgraded
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        *new_parents, new_leaf = new.split(".")
        target = upgraded
        for key in new_parents:
            target = target.setdefault(key, {})
        target.setdefault(new_leaf, value)
    return upgraded
