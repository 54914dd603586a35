"""Reading a GLUE task's splits (``mole_lightning.core.tasks`` says what each task reads), from a local
folder or the hub."""

from __future__ import annotations

import csv
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from mole_lightning.core.tasks import GlueTaskSpec
from mole_lightning.errors import DataFileError, HubUnavailableError

logger = logging.getLogger(__name__)

csv.field_size_limit(sys.maxsize)


@dataclass
class GlueExample:
    """One row: sentence 1, sentence 2 (``None`` for single-sentence tasks) and the label
    (class id, or the float score for STS-B)."""

    text_a: str
    text_b: str | None
    label: int | float


def read_glue_tsv(
    path: Path, spec: GlueTaskSpec, skip_malformed: bool = False
) -> list[GlueExample]:
    """Reads a GLUE TSV file in the original ``glue_data`` layout.

    Rows with an empty sentence and rows with more fields than the header (or, without a
    header, than the first row) are kept and counted in one warning each.

    Args:
        path: the ``.tsv`` file.
        spec: the task it belongs to.
        skip_malformed: drop rows with missing fields, bad labels or bytes that are not
            UTF-8 (each is logged) instead of failing.

    Raises:
        DataFileError: the file is missing, lacks a needed column, or a row is malformed
            (the message names the file and line).
    """
    if not path.is_file():
        raise DataFileError(f"{path}: file not found (expected the glue_data layout, see README)")
    examples: list[GlueExample] = []
    empty, extra = [], []
    # undecodable bytes become lone surrogates, reported per row by _parse_row
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None) if spec.has_header else None
        columns = _column_indices(path, spec, header) if spec.has_header else None
        text_idx = columns[0] if columns else list(spec.text_columns)
        label_idx = columns[1] if columns else spec.label_column
        width = len(header) if header else None
        first_line = 2 if spec.has_header else 1
        for line_no, row in enumerate(reader, start=first_line):
            try:
                example = _parse_row(row, text_idx, label_idx, spec)
            except ValueError as err:
                message = f"{path}:{line_no}: malformed row ({err}): {row!r:.200}"
                if not skip_malformed:
                    raise DataFileError(
                        message + " (set data.skip_malformed=true to skip such rows)"
                    ) from None
                logger.warning("skipped %s", message)
                continue
            examples.append(example)
            width = width or len(row)
            if len(row) > width:
                extra.append(line_no)
            if not example.text_a or example.text_b == "":
                empty.append(line_no)
    for lines, what in ((empty, "an empty sentence"), (extra, f"more than {width} fields")):
        if lines:
            logger.warning(
                "%s: %d row(s) with %s, kept (lines %s%s)",
                path,
                len(lines),
                what,
                ", ".join(map(str, lines[:10])),
                ", ..." if len(lines) > 10 else "",
            )
    return examples


def _column_indices(
    path: Path, spec: GlueTaskSpec, header: list[str] | None
) -> tuple[list[int], int]:
    if header is None:
        raise DataFileError(f"{path}: empty file (expected a header row)")
    wanted = [*spec.text_columns, spec.label_column]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataFileError(f"{path}:1: header lacks column(s) {missing}; found {header}")
    indices = [header.index(c) for c in wanted]
    return indices[:-1], indices[-1]


def _parse_row(
    row: list[str], text_idx: list[int], label_idx: int, spec: GlueTaskSpec
) -> GlueExample:
    needed = max([*text_idx, label_idx])
    if len(row) <= needed:
        raise ValueError(f"{len(row)} fields, need at least {needed + 1}")
    for column, value in enumerate(row):
        bad = next((c for c in value if "\udc80" <= c <= "\udcff"), None)
        if bad is not None:
            raise ValueError(f"byte 0x{ord(bad) - 0xDC00:02x} in field {column + 1} is not UTF-8")
    texts = [row[i].strip() for i in text_idx]
    raw_label = row[label_idx].strip()
    if spec.is_regression:
        try:
            label: int | float = float(raw_label)
        except ValueError:
            raise ValueError(f"score {raw_label!r} is not a number") from None
    elif raw_label in spec.labels:
        label = spec.labels.index(raw_label)
    else:
        raise ValueError(f"label {raw_label!r} not in {list(spec.labels)}")
    return GlueExample(texts[0], texts[1] if spec.is_pair else None, label)


def read_glue_split(
    spec: GlueTaskSpec, split: str, data_dir: str | Path | None, skip_malformed: bool = False
) -> list[GlueExample]:
    """Reads one split (``train`` or a key of ``spec.dev_splits``).

    With ``data_dir`` set, reads ``<data_dir>/<folder>/<split file>.tsv``; with ``None``,
    loads the hub's ``nyu-mll/glue`` dataset.
    """
    if data_dir is not None:
        stem = "train" if split == "train" else spec.dev_splits[split]
        return read_glue_tsv(Path(data_dir) / spec.folder / f"{stem}.tsv", spec, skip_malformed)
    return _read_hub_split(spec, split)


def _read_hub_split(spec: GlueTaskSpec, split: str) -> list[GlueExample]:
    import datasets

    hub_split = (
        "train" if split == "train" else spec.hub_dev_splits[list(spec.dev_splits).index(split)]
    )
    try:
        table = datasets.load_dataset("nyu-mll/glue", spec.name, split=hub_split)
    except Exception as err:  # the hub raises many types (ConnectionError, OSError, ...)
        raise HubUnavailableError(
            f"could not load GLUE {spec.name!r} ({hub_split}) from the Hugging Face hub: {err}. "
            "To run offline, point data.dir at a local glue_data folder "
            "(e.g. data.dir=../shared/data/glue_data)."
        ) from err
    columns = [table[c] for c in spec.hub_text_columns]
    labels = table["label"]
    return [
        GlueExample(cols[0], cols[1] if spec.is_pair else None, label)
        for *cols, label in zip(*columns, labels, strict=True)
    ]
