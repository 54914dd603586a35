"""Config nodes as dataclasses, strictly: the one way a YAML node becomes the settings
object a module reads (a method's options, the task head's).

The dataclass is the single spelling of its options: their names, types and defaults.
A node is merged onto it with OmegaConf's structured configs, so an option the
dataclass does not have, or a value of the wrong type, is a ``ConfigError`` naming the
option and the valid ones, never dropped or passed on unchecked; the dataclass's own
``__post_init__`` then checks the values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from mole_lightning.errors import ConfigError

T = TypeVar("T")


def option_defaults(cls: type) -> dict[str, Any]:
    """The options of the dataclass ``cls`` with their defaults, as a plain nested dict
    (nested dataclasses as dicts): what a config group's option holds before its YAML."""
    return OmegaConf.to_container(OmegaConf.structured(cls))


def dataclass_from_node(cls: type[T], node: Mapping | DictConfig, prefix: str) -> T:
    """``node`` as a ``cls`` instance: its values over the dataclass's defaults.

    Args:
        cls: the dataclass (nested dataclass fields for nested nodes).
        node: the config node (interpolations are resolved first) or a plain dict.
        prefix: the node's place in the config, named in messages (``method``, ``head``).

    Raises:
        ConfigError: a key that is not an option of ``cls`` (or of a nested dataclass),
            with the valid options; a value of the wrong type; or what ``__post_init__``
            refuses.
    """
    values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
    except ConfigKeyError as err:
        owner = err.object_type if dataclasses.is_dataclass(err.object_type) else cls
        valid = ", ".join(sorted(f.name for f in dataclasses.fields(owner)))
        raise ConfigError(
            f"{prefix}.{err.full_key}: no such option of {prefix}={describe(cls, values)}; "
            f"valid: {valid}"
        ) from None
    except OmegaConfBaseException as err:
        key, value = failing_option(cls, values, err)
        reason = (err.msg or type(err).__name__).splitlines()[0]
        raise ConfigError(
            f"{prefix}.{key}={value!r}: {reason} ({prefix}={describe(cls, values)})"
        ) from None


def failing_option(cls: type, values: Mapping, err: OmegaConfBaseException) -> tuple[str, Any]:
    """``(dotted key, value)`` of the option a merge refused: OmegaConf's ``full_key``
    when it names an option, else the top-level option that fails alone (an element
    of a list option, whose ``full_key`` is only its index)."""
    top = next(
        (k for k in values if not _merges(cls, {k: values[k]})),
        None,
    )
    key = str(err.full_key or "")
    if top is None or key == top or key.startswith(f"{top}."):
        return key or str(top), err.value
    return str(top), values[top]


def _merges(cls: type, values: Mapping) -> bool:
    try:
        OmegaConf.merge(OmegaConf.structured(cls), values)
    except OmegaConfBaseException:
        return False
    return True


def describe(cls: type, values: Mapping) -> str:
    """The option a node is of, for messages: its ``name`` (``mole``), else the class."""
    return str(values.get("name") or cls.__name__) if isinstance(values, Mapping) else cls.__name__
