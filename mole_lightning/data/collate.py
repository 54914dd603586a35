"""Batching tokenized rows: dynamic padding, and word graphs for graph methods."""

from __future__ import annotations

import torch

from mole_lightning.graphs import collate_word_graphs


def padded_length(
    lengths: list[int], pad_to_multiple_of: int | None, pad_to_length: int | None
) -> int:
    """Length to pad a batch to: ``pad_to_length`` if set (static shapes for compiled
    models), else the longest row rounded up to ``pad_to_multiple_of``."""
    if pad_to_length:
        return pad_to_length
    longest = max(lengths)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    return longest


def collate_glue(
    rows: list[dict],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
    pad_to_length: int | None = None,
    graphs: list[list] | None = None,
    graph_kinds: list[str] | None = None,
) -> dict:
    """Pads a list of tokenized rows into a batch.

    Returns:
        ``input_ids``, ``attention_mask`` (and ``token_type_ids``) ``[batch, seq]``,
        ``labels`` ``[batch]`` (float for regression), ``idx`` ``[batch]`` and, when
        ``graphs`` is given (per text column, the split's ``SentenceGraphs`` list),
        ``word_graphs`` (a ``WordGraphBatch``, padded to ``pad_to_length`` word nodes
        when that is set).
    """
    seq = padded_length([len(r["input_ids"]) for r in rows], pad_to_multiple_of, pad_to_length)
    batch_size = len(rows)
    input_ids = torch.full((batch_size, seq), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, seq), dtype=torch.long)
    has_types = "token_type_ids" in rows[0]
    token_type_ids = torch.zeros((batch_size, seq), dtype=torch.long) if has_types else None
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, :n] = torch.tensor(row["input_ids"])
        attention_mask[i, :n] = 1
        if has_types:
            token_type_ids[i, :n] = torch.tensor(row["token_type_ids"])
    labels = torch.tensor([r["labels"] for r in rows])
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels.float() if labels.is_floating_point() else labels.long(),
        "idx": torch.tensor([r["idx"] for r in rows]),
    }
    if has_types:
        batch["token_type_ids"] = token_type_ids
    if graphs is not None:
        items = [
            (graphs[0][r["idx"]], graphs[1][r["idx"]] if len(graphs) > 1 else None) for r in rows
        ]
        batch["word_graphs"] = collate_word_graphs(
            items,
            offsets=[[tuple(o) for o in r["offset_mapping"]] for r in rows],
            sequence_ids=[r["sequence_ids"] for r in rows],
            seq_len=seq,
            kinds=graph_kinds,
            word_capacity=pad_to_length or None,
        )
    return batch
