"""Mean-pooled word representations of every layer, cached per (model, layer).

Layer 0 is the embedding output, layer ``t`` (1..T) the output of transformer layer ``t``
as the next layer reads it: hooks registered after the method's own hooks, so a MoLEx
layer gives its mixed output ``alpha * u_t + (1 - alpha) * u_j``. A word's vector is the
mean of its subword vectors (tokens aligned to words by character spans, as the word
graphs are), a sentence's the mean of its word vectors; special tokens are left out.
For a method that reads word graphs (MoLE), each batch carries the sentences' graphs,
collated against the batch's token offsets as in training (``collate_word_graphs``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mole_lightning.graphs import SentenceGraphs, WordGraphBatch, collate_word_graphs
from mole_lightning.graphs.alignment import align_tokens_to_words
from mole_lightning.graphs.store import texts_fingerprint
from mole_lightning.methods.encoder import TunedEncoder
from mole_lightning.methods.molex.layer_call import layer_hidden
from mole_lightning.methods.molex.routing import find_layer_stack


def word_spans(words: tuple[str, ...]) -> tuple[str, list[tuple[int, int]]]:
    """The words joined by spaces and each word's character span in that text."""
    spans, start = [], 0
    for w in words:
        spans.append((start, start + len(w)))
        start += len(w) + 1
    return " ".join(words), spans


def pooling_matrix(token_to_word: list[list[int]], seq: int) -> torch.Tensor:
    """``[batch, seq]`` weights that mean-pool tokens into words and words into the
    sentence: ``weights @ hidden`` is the mean over words of each word's subword mean."""
    weights = torch.zeros(len(token_to_word), seq)
    for b, words in enumerate(token_to_word):
        counts: dict[int, int] = {}
        for w in words:
            if w >= 0:
                counts[w] = counts.get(w, 0) + 1
        for t, w in enumerate(words):
            if w >= 0:
                weights[b, t] = 1.0 / (counts[w] * len(counts))
    return weights


def batch_word_graphs(enc, graphs: list[SentenceGraphs], kinds: list[str]) -> WordGraphBatch:
    """The ``WordGraphBatch`` of one tokenized batch ``enc`` (padded, with
    ``offset_mapping``) of single sentences whose graphs are ``graphs`` ``[batch]``."""
    seq = enc["input_ids"].shape[1]
    return collate_word_graphs(
        [(g, None) for g in graphs],
        offsets=[[tuple(o) for o in enc["offset_mapping"][b].tolist()] for b in range(len(graphs))],
        sequence_ids=[enc.sequence_ids(b) for b in range(len(graphs))],
        seq_len=seq,
        kinds=kinds,
    )


@torch.no_grad()
def layer_features(
    encoder: TunedEncoder,
    tokenizer,
    sentences: list[tuple[str, ...]],
    device: torch.device,
    batch_size: int = 32,
    max_length: int = 128,
    graphs: list[SentenceGraphs] | None = None,
) -> np.ndarray:
    """``[T + 1, N, hidden]`` float32 sentence vectors of every layer (0 = embeddings).

    Args:
        graphs: ``[N]`` word graphs of the sentences, required when the encoder's method
            reads them (``encoder.needs_graphs``); ignored otherwise.
    """
    kinds = encoder.graph_kinds
    if kinds and (graphs is None or len(graphs) != len(sentences)):
        raise ValueError(
            f"method {encoder.method} reads {kinds} word graphs: pass the graphs of all "
            f"{len(sentences)} sentences (got {None if graphs is None else len(graphs)})"
        )
    base, layers = find_layer_stack(encoder.backbone)
    captured: list[torch.Tensor] = []
    handles = [base.embeddings.register_forward_hook(lambda m, a, out: captured.append(out))]
    handles += [
        layer.register_forward_hook(lambda m, a, out: captured.append(layer_hidden(out)))
        for layer in layers
    ]
    encoder.eval().to(device)
    chunks = []
    try:
        for start in tqdm(range(0, len(sentences), batch_size), desc="layer features", leave=False):
            texts, spans = zip(
                *(word_spans(s) for s in sentences[start : start + batch_size]), strict=True
            )
            enc = tokenizer(
                list(texts),
                truncation=True,
                max_length=max_length,
                padding=True,
                return_offsets_mapping=True,
                return_tensors="pt",
            )
            token_to_word = [
                align_tokens_to_words(
                    enc["offset_mapping"][b].tolist(), enc.sequence_ids(b), [spans[b]]
                )
                for b in range(len(texts))
            ]
            weights = pooling_matrix(token_to_word, enc["input_ids"].shape[1]).to(device)
            word_graphs = (
                batch_word_graphs(enc, graphs[start : start + batch_size], kinds).to(device)
                if kinds
                else None
            )
            captured.clear()
            encoder(
                enc["input_ids"].to(device),
                enc["attention_mask"].to(device),
                enc["token_type_ids"].to(device) if "token_type_ids" in enc else None,
                word_graphs,
            )
            stacked = torch.stack(captured)  # [T + 1, batch, seq, hidden]
            chunks.append(torch.einsum("bs,lbsh->lbh", weights, stacked.float()).cpu())
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(chunks, dim=1).numpy()


def sentences_key(sentences: list[tuple[str, ...]], max_length: int) -> str:
    """A key that changes with any sentence (or the truncation length)."""
    return texts_fingerprint([" ".join(s) for s in sentences] + [str(max_length)])[:16]


def model_key(ckpt: Path | None, backbone_name: str) -> str:
    """The pre-trained backbone's name, or a hash of the checkpoint's path, size and mtime."""
    if ckpt is None:
        return f"pretrained-{backbone_name}"
    stat = ckpt.stat()
    tag = f"{ckpt.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{ckpt.stem}-{hashlib.sha1(tag.encode()).hexdigest()[:12]}"


def cached_layer_features(cache_dir: Path, key: str, compute, num_layers: int) -> list[np.ndarray]:
    """Per layer ``[N, hidden]`` features from ``cache_dir/<key>/layer<i>.npy``; on any
    missing layer runs ``compute() -> [T + 1, N, hidden]`` and saves every layer."""
    folder = cache_dir / key
    paths = [folder / f"layer{i}.npy" for i in range(num_layers + 1)]
    if all(p.is_file() for p in paths):
        return [np.load(p) for p in paths]
    features = compute()
    folder.mkdir(parents=True, exist_ok=True)
    for path, array in zip(paths, features, strict=True):
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, array)
        tmp.replace(path)
    return list(features)
