"""Logistic-regression probes with a fixed split, and the majority baseline."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def probe_split(
    labels: list[str | None], test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(train indices, test indices)`` of the sentences that have the property; the same
    for every layer (and every checkpoint probed on the same data)."""
    have = np.array([i for i, label in enumerate(labels) if label is not None])
    train, test = train_test_split(have, test_size=test_size, random_state=seed)
    return np.sort(train), np.sort(test)


def majority_accuracy(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of always predicting the training set's most frequent label."""
    values, counts = np.unique(y_train, return_counts=True)
    return float(np.mean(y_test == values[counts.argmax()]))


def probe_accuracy(
    features: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    seed: int,
    max_iter: int = 1000,
) -> float:
    """Test accuracy of a standardised logistic-regression probe trained on ``train``.

    Args:
        features: ``[N, hidden]`` sentence vectors.
        y: ``[N]`` labels (entries outside ``train`` and ``test`` are ignored).
    """
    if len(np.unique(y[train])) < 2:  # nothing to learn: the only class seen
        return majority_accuracy(y[train], y[test])
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed)
    )
    probe.fit(features[train], y[train])
    return float(probe.score(features[test], y[test]))
