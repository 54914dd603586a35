"""Random word graphs with the shape of real batches, for tests, benchmarks and smoke runs."""

from __future__ import annotations

import torch

from mole_lightning.graphs.batch import WordGraphBatch
from mole_lightning.methods.mole.config import GRAPH_EXPERTS


def random_word_graphs(
    batch_size: int,
    seq_len: int,
    max_words: int,
    *,
    min_words: int = 0,
    kinds: tuple[str, ...] = GRAPH_EXPERTS,
    num_relations: int = 2,
    edges_per_word: float = 2.0,
    generator: torch.Generator | None = None,
) -> WordGraphBatch:
    """A ``WordGraphBatch`` of random words, subwords and edges.

    Every example has ``min_words..max_words`` words; token 0 is a special token, each
    word takes 1-3 subwords after it while they fit before the last token, the rest are
    padding (``-1``), so long examples have words without subwords. Each graph kind has
    about ``edges_per_word`` random edges per word (duplicates, self-loops and isolated
    nodes included) with random relation types.
    """

    def randint(low: int, high: int, size: tuple[int, ...] = ()) -> torch.Tensor:
        return torch.randint(low, high, size, generator=generator)

    token_to_word = torch.full((batch_size, seq_len), -1, dtype=torch.long)
    num_words = randint(min_words, max_words + 1, (batch_size,))
    edge_lists: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {
        k: ([], []) for k in kinds
    }
    for b in range(batch_size):
        n = int(num_words[b])
        position = 1
        for w in range(n):
            for _ in range(int(randint(1, 4))):
                if position < seq_len - 1:
                    token_to_word[b, position] = w
                    position += 1
        if n == 0:
            continue
        for indices, types in edge_lists.values():
            m = int(round(edges_per_word * n))
            indices.append(randint(0, n, (2, m)) + b * max_words)
            types.append(randint(0, num_relations, (m,)))
    edges = {
        kind: (
            torch.cat(indices, dim=1) if indices else torch.zeros(2, 0, dtype=torch.long),
            torch.cat(types) if types else torch.zeros(0, dtype=torch.long),
        )
        for kind, (indices, types) in edge_lists.items()
    }
    return WordGraphBatch(token_to_word, num_words, edges, max_words, num_relations)
