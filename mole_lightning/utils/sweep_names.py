"""Multirun job folders named after what the sweep varies: the ``mole_swept`` resolver of
``hydra.sweep.subdir`` (``conf/hydra/default.yaml``).

A job folder is ``<num>_<task>_<method>_seed<seed>`` followed by each other swept key
and value (``0_rte_lora_seed1_lr0.0001``, the value as Hydra writes it): the keys swept
on the command line (``optim.lr=1e-4,3e-4``) or by the sweeper's params
(``hparams_search=lr_search``), read from the ``multirun.yaml`` Hydra writes into the
sweep folder before the first job.
Hydra's own ``hydra.job.override_dirname`` names every override of the command line, the
fixed ones too (``data.dir=/a/long/path``); its settings are reused here: keys in
``hydra.job.config.override_dirname.exclude_keys`` (task, method, seed: already in the
name) are left out, ``kv_sep`` (empty, as in ``seed42``) and ``item_sep`` (``_``) join
the rest. A key is shortened to its last part (``optim.lr`` -> ``lr``) unless two swept
keys share it; a value keeps letters, digits and ``._+-@`` (others become ``-``), so the
folder can be given back to Hydra (``ckpt_path=<job folder>``: no ``=`` or ``,``).
Nothing else swept: no suffix, no trailing separator.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

MULTIRUN_YAML = "multirun.yaml"
MAX_VALUE_CHARS = 40
UNSAFE = re.compile(r"[^A-Za-z0-9._+@-]")
"""Characters a value loses in a folder name: path separators, and Hydra's ``=`` ``,``
``[]`` and quotes, which would break ``ckpt_path=<job folder>``."""


def swept_keys(sweep_dir: str | Path) -> set[str]:
    """The keys the multirun in ``sweep_dir`` sweeps (empty when its ``multirun.yaml`` is
    missing or unreadable)."""
    path = Path(str(sweep_dir)) / MULTIRUN_YAML
    try:
        master = OmegaConf.load(path)
    except (OSError, ValueError):
        return set()
    lines = [str(o) for o in OmegaConf.select(master, "hydra.overrides.task", default=[]) or []]
    params = OmegaConf.select(master, "hydra.sweeper.params", default=None) or {}
    lines += [f"{key}={value}" for key, value in params.items()]
    parser = OverridesParser.create()
    keys = set()
    for line in lines:
        try:
            (override,) = parser.parse_overrides([line])
        except Exception:  # a sweeper's own syntax: not a basic override
            keys.add(line.split("=", 1)[0].lstrip("+~"))
            continue
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    return keys


def swept_suffix(
    sweep_dir: str,
    job_overrides: Iterable[str],
    exclude_keys: Iterable[str] = (),
    kv_sep: str = "",
    item_sep: str = "_",
) -> str:
    """``item_sep`` + the job's swept key-value items, or ``""`` when nothing but the
    excluded keys is swept."""
    swept = swept_keys(sweep_dir) - set(exclude_keys)
    values = {}
    for override in OverridesParser.create().parse_overrides([str(o) for o in job_overrides]):
        key = override.key_or_group
        if key in swept and not key.startswith("hydra"):
            value = UNSAFE.sub("-", override.get_value_element_as_str().strip("'\""))
            values[key] = value[:MAX_VALUE_CHARS]
    if not values:
        return ""
    last = [key.rsplit(".", 1)[-1] for key in values]
    items = [
        f"{short if last.count(short) == 1 else key}{kv_sep}{value}"
        for key, short, value in zip(values, last, values.values(), strict=True)
    ]
    return item_sep + item_sep.join(sorted(items))


def _mole_swept(sweep_dir, job_overrides, exclude_keys=(), kv_sep="", item_sep="_") -> str:
    return swept_suffix(
        str(sweep_dir), list(job_overrides), list(exclude_keys or ()), str(kv_sep), str(item_sep)
    )


def register() -> None:
    """Registers ``mole_swept`` (once)."""
    if not OmegaConf.has_resolver("mole_swept"):
        OmegaConf.register_new_resolver("mole_swept", _mole_swept)
