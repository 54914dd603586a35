"""GLUE metrics agree with scikit-learn and scipy on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from mole_lightning.core.tasks import get_task
from mole_lightning.metrics.glue import glue_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    preds, target = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    cola = glue_metrics(get_task("cola"))
    cola.update(torch.tensor(preds), torch.tensor(target))
    assert cola.compute()["mcc"].item() == pytest.approx(matthews_corrcoef(target, preds), abs=1e-6)
    mrpc = glue_metrics(get_task("mrpc"))
    for chunk in np.array_split(np.arange(200), 4):  # batched updates
        mrpc.update(torch.tensor(preds[chunk]), torch.tensor(target[chunk]))
    out = mrpc.compute()
    assert out["f1"].item() == pytest.approx(f1_score(target, preds), abs=1e-6)
    assert out["acc"].item() == pytest.approx(accuracy_score(target, preds), abs=1e-6)
    preds3, target3 = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    mnli = glue_metrics(get_task("mnli"))
    mnli.update(torch.tensor(preds3), torch.tensor(target3))
    assert set(mnli.compute()) == {"acc"}
    assert mnli.compute()["acc"].item() == pytest.approx(accuracy_score(target3, preds3), abs=1e-6)


@pytest.mark.parametrize("constant", [0, 1])
def test_mcc_of_a_constant_predictor_is_zero(glue_dir, constant: int) -> None:
    """CoLA dev with every sentence predicted one class: MCC 0 as in scikit-learn (and
    GLUE), not torchmetrics' 0.0256 that made a constant MoLE model read as MCC 2.6."""
    import csv

    with (glue_dir / "CoLA" / "dev.tsv").open() as f:
        target = [int(r[1]) for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    preds = [constant] * len(target)
    cola = glue_metrics(get_task("cola"))
    cola.update(torch.tensor(preds), torch.tensor(target))
    assert matthews_corrcoef(target, preds) == 0.0
    assert cola.compute()["mcc"].item() == 0.0


def test_stsb_metrics_match_scipy() -> None:
    rng = np.random.default_rng(3)
    target = rng.uniform(0, 5, 300)
    preds = target + rng.normal(0, 1.5, 300)
    stsb = glue_metrics(get_task("stsb"))
    stsb.update(torch.tensor(preds, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))
    out = stsb.compute()
    assert out["pearson"].item() == pytest.approx(pearsonr(preds, target)[0], abs=1e-4)
    assert out["spearman"].item() == pytest.approx(spearmanr(preds, target)[0], abs=1e-4)
