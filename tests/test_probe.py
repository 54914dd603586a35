"""Probing: UD properties on hand-checked sentences, the bigram-shift generator, the
probes and their majority baseline, and the per-layer feature cache."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mole_lightning.probing.cli import load_probed_model, probe_table
from mole_lightning.probing.probes import majority_accuracy, probe_accuracy, probe_split
from mole_lightning.probing.properties import (
    PROPERTIES,
    bigram_shift,
    build_probe_data,
    read_conllu,
)
from tests.conftest import CONF_DIR


@pytest.fixture(scope="module")
def ud(shared_data: Path):
    return read_conllu(shared_data / "ud" / "en_ewt-ud-dev.conllu")


def test_ud_properties_on_hand_checked_sentences(ud) -> None:
    assert len(ud) == 2001
    data = build_probe_data(ud, seed=0)
    labels = {p: data.labels[p][:2] for p in PROPERTIES}
    # "From the AP comes this story :" (7 words; comes <- story; root Pres; no object)
    # "President Bush on Tuesday nominated two individuals to replace retiring jurists on
    #  federal courts in the Washington area ." (19 words; nominated > replace > jurists >
    #  courts > area > Washington: depth 6; Past; Bush Sing; individuals Plur)
    assert labels["length"] == ["<=8", "17-20"]
    assert labels["depth"] == ["<=3", "6"]
    assert labels["tense"] == ["Pres", "Past"]
    assert labels["subj_number"] == ["Sing", "Sing"]
    assert labels["obj_number"] == [None, "Plur"]


def test_bigram_shift_swaps_exactly_one_adjacent_pair(ud) -> None:
    rng = random.Random(0)
    for sentence in ud[:300]:
        result = bigram_shift(sentence.words, rng)
        if result is None:
            assert all(a == b for a, b in zip(sentence.words, sentence.words[1:], strict=False))
            continue
        swapped, i = result
        changed = [
            k for k, (a, b) in enumerate(zip(sentence.words, swapped, strict=True)) if a != b
        ]
        assert changed == [i, i + 1]
        assert (swapped[i], swapped[i + 1]) == (sentence.words[i + 1], sentence.words[i])


def test_bigram_shift_data_is_seeded_and_balanced(ud) -> None:
    first, again, other = (build_probe_data(ud, seed) for seed in (0, 0, 1))
    assert first.sentences == again.sentences and first.labels == again.labels
    assert first.sentences != other.sentences
    shift = first.labels["bigram_shift"]
    n_swapped, n_original = shift.count("swapped"), shift.count("original")
    assert abs(n_swapped - n_original) <= 0.05 * len(ud) and n_swapped + n_original <= len(ud)
    originals = {s.words for s in ud}
    for words, label in zip(first.sentences, shift, strict=True):
        if label == "swapped":
            assert words not in originals or len(set(words)) < len(words)


def test_probe_on_constant_property_gets_exactly_majority_accuracy() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 16))
    labels = ["Past"] * 200
    train, test = probe_split(labels, 0.2, seed=0)
    y = np.array(labels)
    assert (
        probe_accuracy(features, y, train, test, seed=0)
        == majority_accuracy(y[train], y[test])
        == 1.0
    )


def test_probe_learns_a_linear_property_above_majority() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 8))
    y = np.where(features[:, 0] > 0.5, "a", "b")  # unbalanced, linearly separable
    train, test = probe_split(list(y), 0.25, seed=0)
    assert (
        probe_accuracy(features, y, train, test, seed=0)
        > majority_accuracy(y[train], y[test]) + 0.1
    )


def test_real_probe_table_and_feature_cache(ud, tmp_path: Path, monkeypatch) -> None:
    """MiniLM on 16 UD sentences: every layer probed, a constant property equals the
    majority row exactly, and the second run reads the cached features."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "probe.yaml",
            overrides=[f"cache_dir={tmp_path}", "properties=[length,tense]", "batch_size=16"],
        )
    data = build_probe_data(ud[:16], seed=0)
    data.labels["tense"] = ["Past"] * len(data.sentences)
    model = load_probed_model(None, cfg.backbone)
    table = probe_table(cfg, model, data, torch.device("cpu"))
    assert list(table) == ["embeddings", *(f"layer{t}" for t in range(1, 7)), "majority"]
    assert all(table[row]["tense"] == table["majority"]["tense"] == 1.0 for row in table)
    cached = sorted(p.name for p in tmp_path.rglob("layer*.npy"))
    assert cached == [f"layer{i}.npy" for i in range(7)]
    monkeypatch.setattr("mole_lightning.probing.cli.layer_features", None)  # a miss fails
    assert probe_table(cfg, model, data, torch.device("cpu")) == table
