"""Batched word graphs, the one form every graph expert reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class WordGraphBatch:
    """Word graphs of one batch, padded to ``max_words`` word nodes per example.

    Node ids are global: word ``w`` of example ``b`` is node ``b * max_words + w``.
    The words of the second sentence of a pair follow the first sentence's words; no
    edge crosses between the two sentences.

    Attributes:
        token_to_word: ``[batch, seq]`` local word index of every token, ``-1`` for
            special, padding and unmatched tokens (they get no graph update).
        num_words: ``[batch]`` number of word nodes of each example.
        edges: graph kind (``"syntactic"``, ``"semantic"``, ``"sequential"``) ->
            ``(edge_index [2, E], edge_type [E])``; row 0 of ``edge_index`` is the
            source node, row 1 the target node; ``edge_type`` is in
            ``[0, num_relations)``.
        max_words: padded number of word nodes per example.
        num_relations: number of relation types of every graph kind.
        label_groups: graph kind -> ``[E]`` int64 ids in ``[0, E)``, equal for the edges
            with the same target, relation and label (``nmod:of``, ``next``, ...), for
            the MoLE authors' message weights; ``None`` when the batch has no labels.
    """

    token_to_word: torch.Tensor
    num_words: torch.Tensor
    edges: dict[str, tuple[torch.Tensor, torch.Tensor]]
    max_words: int
    num_relations: int = 2
    label_groups: dict[str, torch.Tensor] | None = None

    def to(self, device: torch.device | str) -> WordGraphBatch:
        """Returns a copy with every tensor on ``device``."""
        return WordGraphBatch(
            token_to_word=self.token_to_word.to(device),
            num_words=self.num_words.to(device),
            edges={k: (ei.to(device), et.to(device)) for k, (ei, et) in self.edges.items()},
            max_words=self.max_words,
            num_relations=self.num_relations,
            label_groups=None
            if self.label_groups is None
            else {k: g.to(device) for k, g in self.label_groups.items()},
        )
