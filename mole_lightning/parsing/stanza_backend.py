"""Stanza parser backend: a local-folder ``stanza.Pipeline`` (UD labels natively), batched."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mole_lightning.parsing.base import parse_naming_failure
from mole_lightning.parsing.sentence import ParsedSentence

STANZA_PROCESSORS = "tokenize,pos,lemma,depparse"


@dataclass
class StanzaParserConfig:
    """The ``parser=stanza`` config node.

    Attributes:
        lang: language code of the models (``en``).
        dir: the Stanza model folder (holds ``resources.json`` and ``<lang>/``); ``~`` expands.
        download: fetch missing models into ``dir`` (needs internet); when false, a missing
            model is an error that says how to get it.
        use_gpu: run the neural models on a GPU when there is one.
        batch_size: documents per bulk call (the tokenizer joins them with blank lines).
    """

    lang: str = "en"
    dir: str = "~/stanza_resources"
    download: bool = True
    use_gpu: bool = True
    batch_size: int = 256

    @property
    def model_dir(self) -> Path:
        return Path(self.dir).expanduser()


def _missing_model_message(config: StanzaParserConfig, reason: str) -> str:
    return (
        f"Stanza models for lang={config.lang!r} are missing in {str(config.model_dir)!r} "
        f"({reason}). Download them once on a machine with internet: "
        f"python -c \"import stanza; stanza.download('{config.lang}', "
        f"model_dir='{config.model_dir}', processors='{STANZA_PROCESSORS}')\", "
        f"or set parser.download=true, or use the spaCy parser: parser=spacy"
    )


def stanza_model_version(config: StanzaParserConfig) -> str:
    """``stanza=<version>;lang=<lang>;resources=<hash of resources.json>``, without loading."""
    import stanza

    resources = config.model_dir / "resources.json"
    if not resources.is_file() or not (config.model_dir / config.lang).is_dir():
        raise FileNotFoundError(
            _missing_model_message(config, "no resources.json or no model folder")
        )
    digest = hashlib.sha1(resources.read_bytes()).hexdigest()[:12]
    return f"stanza={stanza.__version__};lang={config.lang};resources={digest}"


def _locate(text: str, piece: str, start: int) -> tuple[int, int]:
    """Finds ``piece`` in ``text`` at or after ``start``; raises when it is not there."""
    at = text.find(piece, start)
    if at < 0:
        raise ValueError(f"token {piece!r} not found in {text!r} after character {start}")
    return at, at + len(piece)


def _word_spans(token, text: str, cursor: int) -> tuple[list[tuple[int, int]], int]:
    """Character spans of a token's words, and the cursor after the token.

    Uses the token's ``start_char``/``end_char`` when the document has them (a pipeline's
    output), else searches the token's text from ``cursor`` (a CoNLL-U document). A
    multi-word token's span is split among its words when their forms spell the token
    ("did" + "n't" = "didn't"); otherwise every word gets the whole token span.
    """
    if token.start_char is not None and token.end_char is not None:
        start, end = token.start_char, token.end_char
    else:
        start, end = _locate(text, token.text, cursor)
    words = token.words
    if len(words) == 1:
        return [(start, end)], end
    if "".join(w.text for w in words) == text[start:end]:
        spans, at = [], start
        for w in words:
            spans.append((at, at + len(w.text)))
            at += len(w.text)
        return spans, end
    return [(start, end)] * len(words), end


def stanza_sentences_to_parsed(sentences: Sequence, text: str) -> ParsedSentence:
    """Merges Stanza sentences (all from ``text``) into one UD ``ParsedSentence``.

    Heads are renumbered across sentences; every sentence's root keeps head ``0``.
    """
    words, spans, heads, deprels, upos, lemmas = [], [], [], [], [], []
    cursor = 0
    for sentence in sentences:
        offset = len(words)
        for token in sentence.tokens:
            token_spans, cursor = _word_spans(token, text, cursor)
            for word, span in zip(token.words, token_spans, strict=True):
                words.append(word.text)
                spans.append(span)
                heads.append(word.head + offset if word.head else 0)
                deprels.append(word.deprel or "dep")
                upos.append(word.upos or "X")
                lemmas.append(word.lemma if word.lemma is not None else word.text)
    return ParsedSentence.build(text, words, spans, heads, deprels, upos, lemmas)


def stanza_document_to_parsed(doc, text: str) -> ParsedSentence:
    """Converts a parsed ``stanza.Document`` of ``text`` to one UD ``ParsedSentence``.

    Works on a pipeline's output (character offsets given) and on documents read with
    ``stanza.utils.conll.CoNLL.conll2doc`` (offsets found by searching ``text``).
    """
    return stanza_sentences_to_parsed(doc.sentences, text)


class StanzaParser:
    """Parses with a ``stanza.Pipeline`` loaded from a local model folder.

    ``parse`` sends the texts in bulk (lists of ``batch_size`` documents, which Stanza's
    tokenizer joins with blank lines and splits back), never one call per text.
    """

    name = "stanza"

    def __init__(self, config: StanzaParserConfig):
        import stanza
        from stanza.pipeline.core import DownloadMethod

        self.config = config
        model_dir = config.model_dir
        if config.download:
            try:
                self.pipeline = stanza.Pipeline(
                    lang=config.lang,
                    dir=str(model_dir),
                    processors=STANZA_PROCESSORS,
                    download_method=DownloadMethod.REUSE_RESOURCES,
                    use_gpu=config.use_gpu,
                    logging_level="WARN",
                )
            except Exception as error:
                raise FileNotFoundError(
                    _missing_model_message(config, f"downloading them failed: {error}")
                ) from error
        else:
            stanza_model_version(config)  # raises the clear "missing" error first
            try:
                self.pipeline = stanza.Pipeline(
                    lang=config.lang,
                    dir=str(model_dir),
                    processors=STANZA_PROCESSORS,
                    download_method=None,
                    use_gpu=config.use_gpu,
                    logging_level="WARN",
                )
            except (FileNotFoundError, ValueError) as error:
                raise FileNotFoundError(_missing_model_message(config, str(error))) from error
        self._version = stanza_model_version(config)

    @property
    def version(self) -> str:
        return self._version

    def parse(self, texts: list[str]) -> list[ParsedSentence]:
        return parse_naming_failure(self._parse_batch, texts, self.name)

    def _parse_batch(self, texts: list[str]) -> list[ParsedSentence]:
        import stanza

        parsed = [ParsedSentence.empty(t) if not t.strip() else None for t in texts]
        todo = [i for i, p in enumerate(parsed) if p is None]
        size = self.config.batch_size
        for at in range(0, len(todo), size):
            chunk = todo[at : at + size]
            docs = self.pipeline([stanza.Document([], text=texts[i]) for i in chunk])
            for i, doc in zip(chunk, docs, strict=True):
                parsed[i] = stanza_document_to_parsed(doc, texts[i])
        return parsed
