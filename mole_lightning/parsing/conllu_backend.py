"""Gold-parse backend: looks every text up in a CoNLL-U file by its ``# text =`` line."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mole_lightning.parsing.base import check_texts
from mole_lightning.parsing.sentence import ParsedSentence, ParseError
from mole_lightning.parsing.stanza_backend import stanza_sentences_to_parsed


@dataclass
class ConlluParserConfig:
    """The ``parser=conllu`` config node.

    Attributes:
        file: a CoNLL-U file whose sentences carry ``# text =`` comments.
    """

    file: str = "../shared/data/ud/en_ewt-ud-dev.conllu"


def _normalise(text: str) -> str:
    return " ".join(text.split())


def conllu_version(config: ConlluParserConfig) -> str:
    """``conllu=<file name>;sha1=<content hash>``: changes when the file's content changes."""
    path = Path(config.file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"parser.file: CoNLL-U file {str(path)!r} does not exist")
    return f"conllu={path.name};sha1={hashlib.sha1(path.read_bytes()).hexdigest()[:16]}"


class ConlluParser:
    """Returns the gold parse of each text from a CoNLL-U file (UD labels, no model).

    A text is found by its exact ``# text =`` line, else by its whitespace-normalised form;
    the first of duplicate sentences wins.
    """

    name = "conllu"

    def __init__(self, config: ConlluParserConfig):
        from stanza.utils.conll import CoNLL

        self.config = config
        self._version = conllu_version(config)
        path = Path(config.file).expanduser()
        doc = CoNLL.conll2doc(input_file=str(path))
        self._by_text: dict[str, object] = {}
        for number, sentence in enumerate(doc.sentences):
            if not sentence.text:
                raise ValueError(f"{path}: sentence {number} has no '# text =' comment")
            self._by_text.setdefault(sentence.text, sentence)
            self._by_text.setdefault(_normalise(sentence.text), sentence)

    @property
    def version(self) -> str:
        return self._version

    def parse(self, texts: list[str]) -> list[ParsedSentence]:
        check_texts(texts, self.name)
        parsed = []
        for i, text in enumerate(texts):
            if not text.strip():
                parsed.append(ParsedSentence.empty(text))
                continue
            sentence = self._by_text.get(text) or self._by_text.get(_normalise(text))
            if sentence is None:
                raise ParseError(
                    f"conllu parser: text {i} ({text!r:.80}) is not a sentence of "
                    f"{self.config.file} (looked up by its '# text =' line)",
                    index=i,
                )
            try:
                parsed.append(stanza_sentences_to_parsed([sentence], text))
            except ValueError as error:
                raise ParseError(
                    f"conllu parser: text {i} ({text!r:.80}): {error}", index=i
                ) from error
        return parsed
