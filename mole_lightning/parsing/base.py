"""The parser interface every backend implements, and its shared batch error handling."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from mole_lightning.parsing.sentence import ParsedSentence, ParseError


@runtime_checkable
class Parser(Protocol):
    """Parses texts into word-level UD dependency parses, in batches.

    Attributes:
        name: backend name (``spacy``, ``stanza``, ``conllu``), the ``parser.name`` option.
        version: a string that changes whenever the backend, its model or its conversion
            to UD changes; graph caches are keyed by it.
    """

    name: str

    @property
    def version(self) -> str: ...

    def parse(self, texts: list[str]) -> list[ParsedSentence]:
        """Parses ``texts`` in batches; returns one ``ParsedSentence`` per text, in order."""
        ...


def check_texts(texts: Sequence[object], parser_name: str) -> None:
    """Raises ``ParseError`` naming the first input that is not a string."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ParseError(
                f"{parser_name} parser: text {i} is a {type(text).__name__}, not a str: {text!r:.80}",
                index=i,
            )


def parse_naming_failure(
    parse_batch: Callable[[list[str]], list[ParsedSentence]],
    texts: list[str],
    parser_name: str,
) -> list[ParsedSentence]:
    """Runs ``parse_batch`` on all ``texts``; if it fails, finds and names the failing text.

    The batch runs once; only when it raises are the texts re-parsed one at a time to find
    the index of the text that fails, which the raised ``ParseError`` names.
    """
    check_texts(texts, parser_name)
    try:
        parsed = parse_batch(texts)
    except ParseError:
        raise
    except Exception as batch_error:
        for i, text in enumerate(texts):
            try:
                parse_batch([text])
            except Exception as error:
                raise ParseError(
                    f"{parser_name} parser failed on text {i} ({text!r:.80}): {error}", index=i
                ) from error
        raise ParseError(
            f"{parser_name} parser failed on a batch of {len(texts)} texts, although each "
            f"text parses alone: {batch_error}"
        ) from batch_error
    if len(parsed) != len(texts):
        raise ParseError(
            f"{parser_name} parser returned {len(parsed)} parses for {len(texts)} texts"
        )
    return parsed
