"""Running a checkpoint over a loader and scoring it with the task's torchmetrics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mole_lightning.core.tasks import GlueTaskSpec
from mole_lightning.metrics.glue import glue_metrics
from mole_lightning.models.glue_module import GlueModule


@dataclass
class Predictions:
    """The model's outputs over one evaluation set.

    Attributes:
        outputs: ``[N, num_labels]`` logits, or ``[N]`` scores for a regression task.
        labels: ``[N]`` gold labels (class ids, or float scores), in the loader's order.
        batch_size: the loader's batch size (metrics are updated in batches of this size,
            as validation does, so the dev suite reproduces the run's metrics exactly).
    """

    outputs: torch.Tensor
    labels: torch.Tensor
    batch_size: int

    @property
    def probabilities(self) -> torch.Tensor:
        """``[N, num_labels]`` softmax of the logits (classification only)."""
        return self.outputs.softmax(-1)


@torch.no_grad()
def predict(model: GlueModule, loader: DataLoader, device: torch.device, desc: str) -> Predictions:
    """Runs ``model`` (in eval mode) over ``loader`` with a progress bar."""
    model.eval()
    outputs, labels = [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=None):  # None: terminal only
        batch = model.transfer_batch_to_device(batch, device, 0)
        outputs.append(model(batch).float().cpu())
        labels.append(batch["labels"].cpu())
    return Predictions(torch.cat(outputs), torch.cat(labels), loader.batch_size or len(labels[0]))


def score(
    spec: GlueTaskSpec, predicted: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> dict[str, float]:
    """The official metrics of ``spec`` (keys as logged in training: ``acc``, ``f1``,
    ``mcc``, ``pearson``, ``spearman``).

    Args:
        predicted: ``[N]`` class ids, or scores for a regression task.
        labels: ``[N]`` gold labels of the same kind.
        batch_size: metric update chunk (the evaluation batch size).
    """
    metrics = glue_metrics(spec)
    for start in range(0, len(labels), batch_size):
        metrics.update(predicted[start : start + batch_size], labels[start : start + batch_size])
    return {k: float(v) for k, v in metrics.compute().items()}


def task_metrics(spec: GlueTaskSpec, predictions: Predictions) -> dict[str, float]:
    """``score`` of the task's own predictions (argmax class, or the regression score)."""
    predicted = predictions.outputs if spec.is_regression else predictions.outputs.argmax(-1)
    return score(spec, predicted, predictions.labels, predictions.batch_size)
