"""The types and ranges of the options a run reads as numbers, checked before anything
runs: ``data.batch_size=abc`` is one line naming the option, not a traceback from deep
inside the data loader or the Trainer."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from mole_lightning.errors import ConfigError

_ABSENT = object()


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _val_check_interval(value) -> bool:
    """Lightning's ``val_check_interval``: batches (an integer >= 1) or a fraction of the
    epoch in (0, 1]."""
    if _int(value):
        return value >= 1
    return isinstance(value, float) and 0 < value <= 1


# option -> (what it must be, check); null is accepted where the text says so
OPTION_TYPES: dict[str, tuple[str, Callable[[object], bool]]] = {
    "seed": ("an integer or null", lambda v: v is None or _int(v)),
    "threads": ("a positive integer or null", lambda v: v is None or (_int(v) and v > 0)),
    "data.batch_size": ("a positive integer", lambda v: _int(v) and v > 0),
    "data.eval_batch_size": ("a positive integer", lambda v: _int(v) and v > 0),
    "data.max_length": ("an integer", _int),
    "data.num_workers": ("an integer >= 0", lambda v: _int(v) and v >= 0),
    "trainer.max_steps": ("an integer, -1 for no limit", lambda v: _int(v) and v >= -1),
    "trainer.max_epochs": (
        "an integer, -1 for no limit, or null",
        lambda v: v is None or (_int(v) and v >= -1),
    ),
    "trainer.val_check_interval": (
        "a number of training batches (an integer >= 1) or a fraction of the epoch in (0, 1]",
        lambda v: v is None or _val_check_interval(v),
    ),
    "trainer.check_val_every_n_epoch": (
        "a positive integer or null",
        lambda v: v is None or (_int(v) and v > 0),
    ),
    "trainer.log_every_n_steps": ("a positive integer", lambda v: _int(v) and v > 0),
    "trainer.accumulate_grad_batches": ("a positive integer", lambda v: _int(v) and v > 0),
    "optim.lr": ("a positive number", lambda v: _number(v) and v > 0),
    "optim.weight_decay": ("a number >= 0", lambda v: _number(v) and v >= 0),
    "callbacks.model_checkpoint.every_n_train_steps": (
        "a positive integer or null",
        lambda v: v is None or (_int(v) and v > 0),
    ),
}


def check_option_types(cfg: DictConfig) -> None:
    """Checks every option of ``OPTION_TYPES`` that ``cfg`` has.

    Raises:
        ConfigError: one line per wrong option: ``<option>=<value>: expected <what>``.
    """
    wrong = []
    for key, (what, ok) in OPTION_TYPES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not ok(value):
            wrong.append(f"{key}={value!r}: expected {what}")
    if wrong:
        raise ConfigError("; ".join(wrong))
