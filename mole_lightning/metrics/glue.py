"""The official GLUE metric of each task, as torchmetrics collections."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import Accuracy, BinaryF1Score, BinaryMatthewsCorrCoef
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


def glue_metrics(spec: GlueTaskSpec) -> MetricCollection:
    """Metrics of one task, keyed by their log names.

    CoLA: ``mcc`` (Matthews correlation); STS-B: ``pearson`` and ``spearman``; MRPC and
    QQP: ``f1`` and ``acc``; every other task: ``acc``. Inputs: predicted class ids
    ``[batch]`` (or scores ``[batch]`` for STS-B) and targets ``[batch]``.
    """
    if spec.name == "cola":
        return MetricCollection({"mcc": GlueMatthewsCorrCoef()})
    if spec.is_regression:
        return MetricCollection({"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()})
    metrics = {"acc": Accuracy(task="multiclass", num_classes=spec.num_labels)}
    if spec.name in ("mrpc", "qqp"):
        metrics["f1"] = BinaryF1Score()
    return MetricCollection(metrics)
