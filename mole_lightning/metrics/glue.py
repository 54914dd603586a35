"""The official GLUE metric of each task, as torchmetrics collections."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import Accuracy, BinaryF1Score, MatthewsCorrCoef
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from mole_lightning.data.glue import GlueTaskSpec


def glue_metrics(spec: GlueTaskSpec) -> MetricCollection:
    """Metrics of one task, keyed by their log names.

    CoLA: ``mcc`` (Matthews correlation); STS-B: ``pearson`` and ``spearman``; MRPC and
    QQP: ``f1`` and ``acc``; every other task: ``acc``. Inputs: predicted class ids
    ``[batch]`` (or scores ``[batch]`` for STS-B) and targets ``[batch]``.
    """
    if spec.name == "cola":
        return MetricCollection({"mcc": MatthewsCorrCoef(task="binary")})
    if spec.is_regression:
        return MetricCollection({"pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()})
    metrics = {"acc": Accuracy(task="multiclass", num_classes=spec.num_labels)}
    if spec.name in ("mrpc", "qqp"):
        metrics["f1"] = BinaryF1Score()
    return MetricCollection(metrics)
