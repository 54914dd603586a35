"""The plain transformers + peft LoRA loop (scripts/plain_lora_loop.py) on real GLUE files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scripts.plain_lora_loop import dev_metrics, main, read_split


@pytest.mark.parametrize(
    "task,rows,first_label",
    [("cola", 8551, 1), ("mrpc", 3668, 1), ("rte", 2490, 1), ("stsb", 5749, 5.0)],
)
def test_reads_every_train_row(glue_dir: Path, task: str, rows: int, first_label) -> None:
    texts, labels = read_split(glue_dir, task, "train")
    assert len(texts) == len(labels) == rows
    assert labels[0] == first_label
    assert all(len(t) == (1 if task == "cola" else 2) and all(t) for t in texts[:50])


def test_dev_metrics() -> None:
    import numpy as np

    preds, labels = np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1])
    assert dev_metrics("cola", preds, labels)["mcc"] == pytest.approx(math.sqrt(1 / 3))
    assert dev_metrics("mrpc", preds, labels) == pytest.approx({"acc": 0.75, "f1": 0.8})
    assert dev_metrics("stsb", preds * 2.0, labels)["pearson"] == pytest.approx(math.sqrt(1 / 3))


def test_plain_loop_trains_a_few_steps(glue_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "plain.json"
    result = main(
        [
            "--task",
            "rte",
            "--data-dir",
            str(glue_dir),
            "--epochs",
            "2",
            "--train-limit",
            "16",
            "--dev-limit",
            "16",
            "--batch-size",
            "8",
            "--max-length",
            "32",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert all(
        0.0 <= e["dev"]["acc"] <= 1.0 and math.isfinite(e["train_loss"]) for e in result["epochs"]
    )
    assert result["steps"] == 4 and result["final_lr"] == 0.0  # linear decay ends at zero
    # LoRA A and B on query and value in 6 layers (r 8, hidden 384) + the linear classifier
    assert result["trainable_params"] == 6 * 2 * 2 * 8 * 384 + (384 * 2 + 2)
    assert result["best"] == result["epochs"][result["best_epoch"] - 1]["dev"]
