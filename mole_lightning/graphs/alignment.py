"""Subword token -> word alignment by character-span overlap, for any fast tokenizer."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence


def align_tokens_to_words(
    offsets: Sequence[tuple[int, int]],
    sequence_ids: Sequence[int | None],
    spans_per_sequence: Sequence[Sequence[tuple[int, int]]],
) -> list[int]:
    """The word each token belongs to: the word whose span overlaps the token's most.

    Overlap (not containment) makes offsets that include a leading space (GPT-2 and
    untrimmed RoBERTa byte-level BPE) align like trimmed ones; ties go to the earlier word.

    Args:
        offsets: ``[seq]`` character ``(start, end)`` of each token in its own sequence's
            text (a fast tokenizer's ``offset_mapping``).
        sequence_ids: ``[seq]`` which text each token comes from (``0``, ``1``), ``None``
            for special and padding tokens.
        spans_per_sequence: per text, the ``[n_s]`` word character spans, in text order.

    Returns:
        ``[seq]`` word index per token, the words of text ``s`` numbered after those of
        texts ``< s``; ``-1`` for special, padding and whitespace tokens, tokens of a
        text with no words, and tokens that overlap no word.
    """
    if len(offsets) != len(sequence_ids):
        raise ValueError(f"{len(offsets)} offsets but {len(sequence_ids)} sequence ids")
    firsts, starts, ends = [], [], []
    total = 0
    for spans in spans_per_sequence:
        firsts.append(total)
        starts.append([int(s) for s, _ in spans])
        ends.append([int(e) for _, e in spans])
        total += len(spans)
    words = []
    for (start, end), seq in zip(offsets, sequence_ids, strict=True):
        if seq is None or end <= start:
            words.append(-1)
            continue
        if seq >= len(spans_per_sequence):
            raise ValueError(
                f"a token of sequence {seq} but word spans of only {len(spans_per_sequence)} "
                f"sequence(s)"
            )
        seq_starts, seq_ends = starts[seq], ends[seq]
        best, best_overlap = -1, 0
        w = bisect_right(seq_ends, start)  # first word ending after the token starts
        while w < len(seq_starts) and seq_starts[w] < end:
            overlap = min(end, seq_ends[w]) - max(start, seq_starts[w])
            if overlap > best_overlap:
                best, best_overlap = w, overlap
            w += 1
        words.append(firsts[seq] + best if best >= 0 else -1)
    return words
