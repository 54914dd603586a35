"""Builds a parser from the Hydra ``parser`` config node (``name`` picks the backend)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from mole_lightning.parsing.base import Parser
from mole_lightning.parsing.conllu_backend import ConlluParser, ConlluParserConfig, conllu_version
from mole_lightning.parsing.spacy_backend import (
    SpacyParser,
    SpacyParserConfig,
    spacy_model_version,
)
from mole_lightning.parsing.stanza_backend import (
    StanzaParser,
    StanzaParserConfig,
    stanza_model_version,
)

_BACKENDS: dict[str, tuple[type, Callable[[Any], Parser], Callable[[Any], str]]] = {
    "spacy": (SpacyParserConfig, SpacyParser, lambda c: spacy_model_version(c.model)),
    "stanza": (StanzaParserConfig, StanzaParser, stanza_model_version),
    "conllu": (ConlluParserConfig, ConlluParser, conllu_version),
}
PARSER_NAMES = tuple(_BACKENDS)


def _as_dict(cfg: Mapping | Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    return dict(cfg)


def parser_config(cfg: Mapping | Any) -> tuple[str, Any]:
    """``(name, backend config dataclass)`` of a ``parser`` node; unknown options raise."""
    options = _as_dict(cfg)
    name = options.pop("name", None)
    if name not in _BACKENDS:
        raise ValueError(f"parser.name={name!r}: choose one of {', '.join(PARSER_NAMES)}")
    config_cls = _BACKENDS[name][0]
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"parser={name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return name, config_cls(**options)


def build_parser(cfg: Mapping | Any) -> Parser:
    """Loads the parser a ``parser`` config node names (e.g. ``{name: spacy, model: ...}``)."""
    name, config = parser_config(cfg)
    return _BACKENDS[name][1](config)


def parser_version(cfg: Mapping | Any) -> str:
    """The ``version`` the parser of ``cfg`` would have, read without loading its model."""
    name, config = parser_config(cfg)
    return _BACKENDS[name][2](config)
