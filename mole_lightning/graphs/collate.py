"""Batches cached sentence graphs for one tokenized batch into a ``WordGraphBatch``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mole_lightning.graphs.alignment import align_tokens_to_words
from mole_lightning.graphs.batch import WordGraphBatch
from mole_lightning.graphs.sentence_graphs import SentenceGraphs


def collate_word_graphs(
    items: Sequence[tuple[SentenceGraphs, SentenceGraphs | None]],
    offsets: Sequence[Sequence[tuple[int, int]]],
    sequence_ids: Sequence[Sequence[int | None]],
    seq_len: int,
    kinds: Sequence[str],
    word_capacity: int | None = None,
) -> WordGraphBatch:
    """Aligns every example's tokens to its words and joins the graphs into one batch.

    Per example, the words of the second text (if any) follow those of the first, and no
    edge crosses between the two. Words cut off by truncation are dropped: each text keeps
    its words up to the last one some token maps to (so ``num_words`` counts only words the
    model sees), and edges touching a dropped word are removed. A kept word no token maps
    to (inside a text; rare) stays a node without tokens.

    Args:
        items: per example, the graphs of its first text and of its second text or ``None``.
        offsets: per example, ``[len_b]`` token character offsets (``len_b <= seq_len``).
        sequence_ids: per example, ``[len_b]`` text of each token (``None`` = special/pad).
        seq_len: padded sequence length of the batch.
        kinds: graph kinds to collate.
        word_capacity: pad every batch to this many word nodes per example (static
            shapes for compiled models; with a fixed ``seq_len`` use ``seq_len``, which no
            truncated text exceeds in practice); ``None``: the batch's largest.

    Returns:
        A ``WordGraphBatch``: ``token_to_word`` ``[batch, seq_len]`` (``-1`` for special,
        padding and unmatched tokens), ``num_words`` ``[batch]``, and per kind
        ``edge_index`` ``[2, E]`` (node ``b * max_words + w``) and ``edge_type`` ``[E]``,
        all int64; ``max_words`` is ``word_capacity`` or the largest ``num_words`` (at
        least 1); per kind ``label_groups`` ``[E]`` (edges with the same target, relation
        and label share an id in ``[0, E)``) when every text carries edge labels.

    Raises:
        ValueError: an example has more words than ``word_capacity``.
    """
    batch = len(items)
    if not len(offsets) == len(sequence_ids) == batch:
        raise ValueError(f"{batch} items, {len(offsets)} offsets, {len(sequence_ids)} sequence ids")
    token_to_word = torch.full((batch, seq_len), -1, dtype=torch.long)
    kept: list[list[int]] = []  # per example, words kept per text
    firsts: list[list[int]] = []  # per example, first node of each text
    for b, (first, second) in enumerate(items):
        texts = [first] if second is None else [first, second]
        if len(offsets[b]) > seq_len:
            raise ValueError(
                f"example {b} has {len(offsets[b])} tokens, more than seq_len={seq_len}"
            )
        spans = [g.spans.tolist() for g in texts]
        words = align_tokens_to_words(offsets[b], sequence_ids[b], spans)
        sizes = [len(s) for s in spans]
        keep = [0] * len(texts)
        for w in words:
            if w >= 0:
                s = 0 if w < sizes[0] else 1
                keep[s] = max(keep[s], w - s * sizes[0] + 1)
        shift = keep[0] - sizes[0]  # second-text words move down over the dropped tail
        local = [w if w < sizes[0] else w + shift for w in words]
        token_to_word[b, : len(local)] = torch.tensor(local, dtype=torch.long)
        kept.append(keep)
        firsts.append([0, keep[0]][: len(texts)])
    num_words = torch.tensor([sum(k) for k in kept], dtype=torch.long)
    max_words = max(1, int(num_words.max())) if batch else 1
    if word_capacity is not None:
        if max_words > word_capacity:
            b = int(num_words.argmax())
            raise ValueError(
                f"example {b} has {max_words} words, more than word_capacity={word_capacity}"
            )
        max_words = word_capacity
    all_texts = [t for first, second in items for t in (first, second) if t is not None]
    with_labels = all(kind in t.labels for t in all_texts for kind in kinds)
    edges, label_groups = {}, {}
    for kind in kinds:
        indices, types, labels = [], [], []
        for b, (first, second) in enumerate(items):
            texts = [first] if second is None else [first, second]
            for s, graphs in enumerate(texts):
                edge_index, edge_type = graphs.edges[kind]
                inside = (edge_index < kept[b][s]).all(axis=0)
                indices.append(
                    edge_index[:, inside].astype(np.int64) + (b * max_words + firsts[b][s])
                )
                types.append(edge_type[inside].astype(np.int64))
                if with_labels:
                    labels.append(graphs.labels[kind][inside].astype(np.int64))
        edge_index = np.concatenate(indices, axis=1) if indices else np.zeros((2, 0), np.int64)
        edge_type = np.concatenate(types) if types else np.zeros(0, np.int64)
        edges[kind] = (torch.from_numpy(edge_index), torch.from_numpy(edge_type))
        if with_labels:
            label = np.concatenate(labels) if labels else np.zeros(0, np.int64)
            label_groups[kind] = torch.from_numpy(_groups(edge_index[1], edge_type, label))
    return WordGraphBatch(
        token_to_word=token_to_word,
        num_words=num_words,
        edges=edges,
        max_words=max_words,
        label_groups=label_groups if with_labels else None,
    )


def _groups(target: np.ndarray, edge_type: np.ndarray, label: np.ndarray) -> np.ndarray:
    """``[E]`` int64 ids in ``[0, E)``, equal exactly for edges with the same
    ``(target, edge_type, label)``."""
    if target.size == 0:
        return np.zeros(0, np.int64)
    keys = np.stack([target, edge_type, label], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
