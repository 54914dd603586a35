"""The GLUE tasks: how each is read (columns, labels, dev splits) and looked up by name.

The bottom of the package: data (reading), metrics and models (heads, scores) all use
these specs without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mole_lightning.errors import ConfigError


@dataclass(frozen=True)
class GlueTaskSpec:
    """How one GLUE task is read.

    Attributes:
        name: config name (``sst2``).
        folder: sub-folder of a ``glue_data`` directory (``SST-2``).
        text_columns: TSV column names (or indices for header-less files) of sentence 1
            and, for pair tasks, sentence 2.
        label_column: TSV column name (or index) of the label.
        hub_text_columns: column names in the hub's ``glue`` dataset.
        labels: label strings in id order (empty for regression).
        dev_splits: evaluation split name -> TSV file stem; the hub split name is
            ``hub_dev_splits`` at the same position.
        has_header: whether the TSV files start with a header row.
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
        GlueTaskSpec("cola", "CoLA", (3,), 1, ("sentence",), ("0", "1"), has_header=False),
        GlueTaskSpec("sst2", "SST-2", ("sentence",), "label", ("sentence",), ("0", "1")),
        GlueTaskSpec(
            "mrpc",
            "MRPC",
            ("#1 String", "#2 String"),
            "Quality",
            ("sentence1", "sentence2"),
            ("0", "1"),
        ),
        GlueTaskSpec(
            "stsb", "STS-B", ("sentence1", "sentence2"), "score", ("sentence1", "sentence2"), ()
        ),
        GlueTaskSpec(
            "qqp",
            "QQP",
            ("question1", "question2"),
            "is_duplicate",
            ("question1", "question2"),
            ("0", "1"),
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
