"""Dependency parsers behind one interface: spaCy, Stanza and gold CoNLL-U, all in UD form."""

from mole_lightning.parsing.base import Parser
from mole_lightning.parsing.clearnlp_to_ud import CLEARNLP_TO_UD, clearnlp_to_ud
from mole_lightning.parsing.conllu_backend import ConlluParser, ConlluParserConfig
from mole_lightning.parsing.factory import PARSER_NAMES, build_parser, parser_config, parser_version
from mole_lightning.parsing.sentence import ParsedSentence, ParseError
from mole_lightning.parsing.spacy_backend import SpacyParser, SpacyParserConfig, spacy_doc_to_parsed
from mole_lightning.parsing.stanza_backend import (
    StanzaParser,
    StanzaParserConfig,
    stanza_document_to_parsed,
)

__all__ = [
    "CLEARNLP_TO_UD",
    "PARSER_NAMES",
    "ConlluParser",
    "ConlluParserConfig",
    "ParseError",
    "ParsedSentence",
    "Parser",
    "SpacyParser",
    "SpacyParserConfig",
    "StanzaParser",
    "StanzaParserConfig",
    "build_parser",
    "clearnlp_to_ud",
    "parser_config",
    "parser_version",
    "spacy_doc_to_parsed",
    "stanza_document_to_parsed",
]
