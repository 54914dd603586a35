"""The tasks: how each GLUE task is read (columns, labels, dev splits, metrics), looked up
by name, and the spec of a custom task (``task=custom``: your own files) built from its
config node.

The bottom of the package: data (reading), metrics and models (heads, scores) all use
these specs without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mole_lightning.errors import ConfigError

CLASSIFICATION_METRICS = ("acc", "f1", "mcc")
"""Metrics of a classification task, as logged (``val/acc``): accuracy, F1 (of the second
label for two classes, macro-averaged for more) and Matthews correlation."""
REGRESSION_METRICS = ("pearson", "spearman")
"""Metrics of a regression task, as logged (``val/pearson``)."""
TASK_KINDS = ("glue", "custom")
"""``task.kind`` values this spec covers (E2E is ``generation``, read elsewhere)."""


@dataclass(frozen=True)
class GlueTaskSpec:
    """How one GLUE-style task (a text or a text pair, a class or a score) is read.

    Attributes:
        name: config name (``sst2``; a custom task's ``task.name``).
        folder: sub-folder of a ``glue_data`` directory (``SST-2``).
        text_columns: TSV column names (or indices for header-less files) of sentence 1
            and, for pair tasks, sentence 2.
        label_column: TSV column name (or index) of the label.
        hub_text_columns: column names in the hub's ``glue`` dataset.
        labels: label strings in id order (empty for regression).
        dev_splits: evaluation split name -> TSV file stem; the hub split name is
            ``hub_dev_splits`` at the same position.
        has_header: whether the TSV files start with a header row.
        metrics: the metrics logged on each dev split (``CLASSIFICATION_METRICS`` or
            ``REGRESSION_METRICS`` names).
        kind: ``glue`` (read from a ``glue_data`` folder or the hub's ``nyu-mll/glue``) or
            ``custom`` (``data.train_file`` ... or ``data.dataset``).
    """

    name: str
    folder: str
    text_columns: tuple[str | int, ...]
    label_column: str | int
    hub_text_columns: tuple[str, ...]
    labels: tuple[str, ...]
    dev_splits: dict[str, str] = field(default_factory=lambda: {"validation": "dev"})
    hub_dev_splits: tuple[str, ...] = ("validation",)
    has_header: bool = True
    metrics: tuple[str, ...] = ("acc",)
    kind: str = "glue"

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


GLUE_TASKS: dict[str, GlueTaskSpec] = {
    spec.name: spec
    for spec in [
        GlueTaskSpec(
            "cola", "CoLA", (3,), 1, ("sentence",), ("0", "1"), has_header=False, metrics=("mcc",)
        ),
        GlueTaskSpec("sst2", "SST-2", ("sentence",), "label", ("sentence",), ("0", "1")),
        GlueTaskSpec(
            "mrpc",
            "MRPC",
            ("#1 String", "#2 String"),
            "Quality",
            ("sentence1", "sentence2"),
            ("0", "1"),
            metrics=("acc", "f1"),
        ),
        GlueTaskSpec(
            "stsb",
            "STS-B",
            ("sentence1", "sentence2"),
            "score",
            ("sentence1", "sentence2"),
            (),
            metrics=REGRESSION_METRICS,
        ),
        GlueTaskSpec(
            "qqp",
            "QQP",
            ("question1", "question2"),
            "is_duplicate",
            ("question1", "question2"),
            ("0", "1"),
            metrics=("acc", "f1"),
        ),
        GlueTaskSpec(
            "mnli",
            "MNLI",
            ("sentence1", "sentence2"),
            "gold_label",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            dev_splits={"validation": "dev_matched", "validation_mismatched": "dev_mismatched"},
            hub_dev_splits=("validation_matched", "validation_mismatched"),
        ),
        GlueTaskSpec(
            "qnli",
            "QNLI",
            ("question", "sentence"),
            "label",
            ("question", "sentence"),
            ("entailment", "not_entailment"),
        ),
        GlueTaskSpec(
            "rte",
            "RTE",
            ("sentence1", "sentence2"),
            "label",
            ("sentence1", "sentence2"),
            ("entailment", "not_entailment"),
        ),
    ]
}


def get_task(name: str) -> GlueTaskSpec:
    """Returns the spec of a GLUE task, or raises a ``ConfigError`` listing the valid names."""
    if name not in GLUE_TASKS:
        raise ConfigError(f"unknown GLUE task {name!r}; valid tasks: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[name]


def custom_columns(task: Mapping) -> tuple[tuple[str, ...], str]:
    """``(text columns, label column)`` of a custom task node, checked.

    Raises:
        ConfigError: not one or two text columns, or no label column.
    """
    columns = task.get("text_columns")
    if isinstance(columns, str):
        columns = [columns]
    if not columns or len(columns) > 2 or not all(isinstance(c, str) and c for c in columns):
        raise ConfigError(
            f"task.text_columns={columns!r}: give one text column (task.text_columns=[sentence]) "
            "or two for a text pair (task.text_columns=[sentence1,sentence2])"
        )
    label = task.get("label_column")
    if not isinstance(label, str) or not label:
        raise ConfigError(f"task.label_column={label!r}: give the label column's name")
    if label in columns:
        raise ConfigError(f"task.label_column={label!r} is also one of task.text_columns")
    return tuple(columns), label


def custom_metric(task: Mapping) -> str:
    """``task.metric`` of a custom task node, checked: a regression metric makes a
    regression task (numeric labels, one output), a classification metric a
    classification task.

    Raises:
        ConfigError: not a metric name, or ``task.labels`` given for a regression metric.
    """
    metric = task.get("metric")
    if metric not in (*CLASSIFICATION_METRICS, *REGRESSION_METRICS):
        raise ConfigError(
            f"task.metric={metric!r} is not a metric; valid: {', '.join(CLASSIFICATION_METRICS)} "
            f"(classification), {', '.join(REGRESSION_METRICS)} (regression)"
        )
    if metric in REGRESSION_METRICS and task.get("labels"):
        raise ConfigError(
            f"task.labels={list(task.get('labels'))!r} with task.metric={metric} (regression: "
            "numeric labels): drop task.labels, or choose a classification metric "
            f"({', '.join(CLASSIFICATION_METRICS)})"
        )
    return metric


def custom_task_spec(task: Mapping) -> GlueTaskSpec:
    """The spec of a custom task from its config node (``conf/task/custom.yaml``).

    A classification task needs ``task.labels`` (the class names in id order), which
    ``mole_lightning.data.custom.resolve_task`` fills from the training data when unset.

    Raises:
        ConfigError: bad text columns, label column or metric, or fewer than two labels.
    """
    columns, label = custom_columns(task)
    if custom_metric(task) in REGRESSION_METRICS:
        labels: tuple[str, ...] = ()
        metrics = REGRESSION_METRICS
    else:
        labels = tuple(str(x) for x in task.get("labels") or ())
        if len(labels) < 2 or len(set(labels)) < len(labels):
            raise ConfigError(
                f"task.labels={task.get('labels')!r}: a classification task needs two or more "
                "distinct labels (null: the labels of the training data)"
            )
        metrics = CLASSIFICATION_METRICS
    return GlueTaskSpec(
        name=str(task.get("name")),
        folder="",
        text_columns=columns,
        label_column=label,
        hub_text_columns=columns,
        labels=labels,
        metrics=metrics,
        kind="custom",
    )


def task_spec(task: Mapping) -> GlueTaskSpec:
    """The spec of the task a config node (``cfg.task``, or a checkpoint's saved one)
    describes: a GLUE task by name, or a custom task from the node itself.

    Raises:
        ConfigError: an unknown task kind or GLUE name, or a bad custom task node.
    """
    kind = task.get("kind", "glue")
    if kind == "custom":
        return custom_task_spec(task)
    if kind != "glue":
        raise ConfigError(
            f"task {task.get('name')!r} is a {kind} task; valid kinds here: {', '.join(TASK_KINDS)}"
        )
    return get_task(task["name"])
