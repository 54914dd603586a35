"""The metrics of a task (its spec's ``metrics``), as torchmetrics collections."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    Accuracy,
    BinaryF1Score,
    BinaryMatthewsCorrCoef,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from mole_lightning.core.tasks import GlueTaskSpec


class GlueMatthewsCorrCoef(BinaryMatthewsCorrCoef):
    """Binary Matthews correlation that is 0 when the predictions (or the targets) are all
    one class, as scikit-learn and GLUE's scorer define it.

    torchmetrics (1.9) returns a small eps-based value there instead: on CoLA dev a model
    that predicts "acceptable" for every sentence scores 0.0256 (MCC 2.6), a constant
    predictor that looks like a model that learned a little.
    """

    def compute(self) -> torch.Tensor:
        tn, fp, fn, tp = self.confmat.reshape(-1)
        if min(tp + fp, tp + fn, tn + fp, tn + fn) == 0:
            return torch.zeros((), device=self.confmat.device)
        return super().compute()


METRICS: dict[str, Callable[[int], Metric]] = {
    "acc": lambda n: Accuracy(task="multiclass", num_classes=n),
    "f1": lambda n: BinaryF1Score() if n == 2 else MulticlassF1Score(n, average="macro"),
    "mcc": lambda n: GlueMatthewsCorrCoef() if n == 2 else MulticlassMatthewsCorrCoef(n),
    "pearson": lambda n: PearsonCorrCoef(),
    "spearman": lambda n: SpearmanCorrCoef(),
}
"""Metric name -> builder from the number of classes. Two classes: F1 of class id 1 (the
second label) and GLUE's Matthews correlation; more: macro F1 and multiclass MCC."""


def glue_metrics(spec: GlueTaskSpec) -> MetricCollection:
    """The metrics of one task (``spec.metrics``), keyed by their log names.

    CoLA: ``mcc`` (Matthews correlation); STS-B: ``pearson`` and ``spearman``; MRPC and
    QQP: ``acc`` and ``f1``; every other GLUE task: ``acc``; a custom task: ``acc``,
    ``f1`` and ``mcc`` (classification) or ``pearson`` and ``spearman`` (regression).
    Inputs: predicted class ids ``[batch]`` (or scores ``[batch]`` for regression) and
    targets ``[batch]``.
    """
    return MetricCollection({name: METRICS[name](spec.num_labels) for name in spec.metrics})
