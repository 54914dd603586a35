"""Moving states between subword tokens and word nodes, batched and without host syncs."""

from __future__ import annotations

import torch

from mole_lightning.utils.tensors import count_indices


class WordAlignment:
    """Pools subword states into word nodes and copies word states back to subwords.

    Every token has a slot ``b * W + w`` (its word node) or the spare slot ``batch * W``
    when ``token_to_word`` is ``-1``; pooling adds into ``batch * W + 1`` rows and drops
    the spare one, so no boolean indexing (and no host sync) is needed.

    Attributes:
        token_slot: ``[batch * seq]`` word slot of every token.
        inverse_count: ``[batch * W, 1]`` ``1 / subwords`` of each word (1 for words
            without subwords), for ``"mean"``.
        first_token: ``[batch * W]`` flat index of each word's first subword
            (``batch * seq``, a zero row, for words without subwords), for ``"first"``.
    """

    def __init__(self, token_to_word: torch.Tensor, max_words: int, pooling: str) -> None:
        batch, seq = token_to_word.shape
        self.batch, self.seq, self.max_words, self.pooling = batch, seq, max_words, pooling
        self.num_words = batch * max_words
        offsets = torch.arange(batch, device=token_to_word.device).unsqueeze(1) * max_words
        slot = torch.where(token_to_word >= 0, token_to_word + offsets, self.num_words)
        self.token_slot = slot.reshape(-1)
        if pooling == "mean":
            counts = count_indices(self.token_slot, self.num_words + 1)
            self.inverse_count = 1.0 / counts[: self.num_words].clamp_min(1).unsqueeze(1)
        else:
            positions = torch.arange(batch * seq, device=token_to_word.device)
            first = torch.full((self.num_words + 1,), batch * seq, device=token_to_word.device)
            first.scatter_reduce_(0, self.token_slot, positions, reduce="amin")
            self.first_token = first[: self.num_words]

    def pool(self, states: torch.Tensor) -> torch.Tensor:
        """``[batch, seq, d]`` subword states -> ``[batch, W, d]`` word states (0 for empty words)."""
        d = states.shape[-1]
        flat = states.reshape(self.batch * self.seq, d)
        if self.pooling == "mean":
            sums = flat.new_zeros(self.num_words + 1, d).index_add_(0, self.token_slot, flat)
            words = sums[: self.num_words] * self.inverse_count.to(flat.dtype)
        else:
            words = torch.cat([flat, flat.new_zeros(1, d)])[self.first_token]
        return words.view(self.batch, self.max_words, d)

    def has_word(self) -> torch.Tensor:
        """``[batch, seq, 1]`` bool: whether each token belongs to a word."""
        return (self.token_slot < self.num_words).view(self.batch, self.seq, 1)

    def scatter(self, word_states: torch.Tensor) -> torch.Tensor:
        """``[batch, W, d]`` word states -> ``[batch, seq, d]``: each subword gets its word's
        state, tokens without a word get zeros."""
        d = word_states.shape[-1]
        flat = word_states.reshape(self.num_words, d)
        padded = torch.cat([flat, flat.new_zeros(1, d)])
        return padded[self.token_slot].view(self.batch, self.seq, d)
