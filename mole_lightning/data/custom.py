"""Reading a custom task (``task=custom``): local CSV, TSV, JSON or JSON Lines files, or a
Hugging Face dataset, checked row by row.

A split becomes ``GlueExample`` rows, as a GLUE split does: the text(s) of
``task.text_columns`` and the label of ``task.label_column``, as a class id (the label's
position in ``task.labels``) or, for a regression metric, a float score. Every problem is
a ``DataFileError`` naming the file, the line (or JSON item) and the column: a missing
column (with the columns there), an empty file, a malformed row, a label the training
file does not have, labels of mixed types (numbers and text), a score that is no number.

Formats, by the file's extension: ``.csv`` (comma-separated, standard quoting), ``.tsv``
(tab-separated, no quoting, as GLUE's files), ``.json`` (a list of objects, or JSON
Lines) and ``.jsonl`` (one object per line); UTF-8, the first CSV/TSV row names the
columns.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from mole_lightning.core.tasks import (
    REGRESSION_METRICS,
    GlueTaskSpec,
    custom_columns,
    custom_metric,
)
from mole_lightning.data.glue import GlueExample
from mole_lightning.data.tokenized_cache import file_fingerprint
from mole_lightning.errors import ConfigError, DataFileError, HubUnavailableError

logger = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train_file", "validation": "validation_file", "test": "test_file"}
"""Split -> the ``data`` option naming its file."""
FILE_TYPES = (".csv", ".tsv", ".json", ".jsonl")
FILE_TYPES_TEXT = ".csv, .tsv, .json or .jsonl"
CUSTOM_DATA_OPTIONS = (*SPLIT_FILES.values(), "dataset")
"""``data`` options only a custom task reads."""

Row = tuple[str, Mapping[str, object]]
"""One row: where it is (``train.csv:12``, ``dev.json: item 3``) and its values by column."""


def custom_splits(data: Mapping) -> list[str]:
    """The splits a custom task's ``data`` options give: ``train``, ``validation`` and,
    with ``data.test_file`` (or a test split of ``data.dataset``), ``test``.

    Raises:
        ConfigError: neither files nor a dataset, both, or a split missing.
    """
    files = {split: data.get(option) for split, option in SPLIT_FILES.items()}
    dataset = data.get("dataset")
    if dataset:
        if any(files.values()):
            given = [SPLIT_FILES[s] for s, f in files.items() if f]
            raise ConfigError(
                f"data.dataset={dataset!r} and {', '.join(given)} both set: read a Hugging Face "
                "dataset or local files, not both (set the other to null)"
            )
        splits = dataset_splits(data)
        missing = [s for s in ("train", "validation") if not splits.get(s)]
        if missing:
            raise ConfigError(
                f"data.dataset={dataset!r}: data.dataset_splits names no "
                f"{' or '.join(missing)} split (e.g. data.dataset_splits.validation=test)"
            )
        return [s for s in SPLIT_FILES if splits.get(s)]
    missing = [SPLIT_FILES[s] for s in ("train", "validation") if not files[s]]
    if missing:
        raise ConfigError(
            f"task=custom needs {' and '.join(f'data.{m}' for m in missing)}: your "
            f"{FILE_TYPES_TEXT} files (README, 'Your own data'), or data.dataset=<a Hugging "
            "Face dataset>"
        )
    return [s for s in SPLIT_FILES if files[s]]


def dataset_splits(data: Mapping) -> dict[str, str | None]:
    """``data.dataset_splits``: split -> the hub dataset's split name."""
    splits = data.get("dataset_splits") or {}
    return {s: splits.get(s) for s in SPLIT_FILES}


def split_file(data: Mapping, split: str) -> Path:
    """The local file of ``split`` (``data.train_file``, ...)."""
    return Path(str(data.get(SPLIT_FILES[split]))).expanduser()


def split_identity(data: Mapping, split: str) -> str:
    """What a split's rows are, for cache keys: a hash of the local file's content (so a
    renamed or moved file keeps its caches and an edited one gets new ones), or the hub
    dataset, config and split name."""
    if data.get("dataset"):
        name = dataset_splits(data)[split]
        return f"hub:{data.get('dataset')}:{data.get('dataset_config')}:{name}"
    return f"file:{file_fingerprint(split_file(data, split))}"


def custom_source(spec: GlueTaskSpec, split: str, data: Mapping) -> str:
    """The tokenized cache's source of a custom split: its rows and how they are read
    (columns, label ids, dropped malformed rows)."""
    how = [spec.text_columns, spec.label_column, spec.labels, bool(data.get("skip_malformed"))]
    return f"custom:{split_identity(data, split)}:{json.dumps(how)}"


def custom_graph_keys(spec: GlueTaskSpec, split: str, data: Mapping) -> list[str]:
    """The graph cache key of each text column of a custom split, from the rows' identity
    (``split_identity``: the file's content) and the column: the same file gives the
    same keys under any name or split."""
    keys = []
    for column, suffix in zip(spec.text_columns, ("a", "b"), strict=False):
        digest = hashlib.sha1(f"{split_identity(data, split)}|{column}".encode()).hexdigest()
        keys.append(f"custom-{digest[:16]}-text_{suffix}")
    return keys


def read_rows(data: Mapping, split: str) -> tuple[str, list[str], list[Row]]:
    """``(name, columns, rows)`` of one split: the file (or hub split) it comes from, the
    columns of its header (JSON: of its first row) and its rows."""
    if data.get("dataset"):
        return read_hub_rows(data, split)
    path = split_file(data, split)
    return str(path), *read_table(path)


def read_table(path: Path) -> tuple[list[str], list[Row]]:
    """The columns and rows of a CSV, TSV, JSON or JSON Lines file.

    Raises:
        DataFileError: no such file, another extension, bytes that are not UTF-8, an
            empty file, a JSON document that is not a list of objects, or a line that
            is not valid CSV/JSON.
    """
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise DataFileError(
            f"{path}: a {suffix or 'extension-less'} file; valid types: {FILE_TYPES_TEXT}"
        )
    if not path.is_file():
        raise DataFileError(f"{path}: file not found (from {Path.cwd()})")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataFileError(
            f"{path}:{line}: byte 0x{raw[err.start]:02x} is not UTF-8; save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataFileError(f"{path}: empty file")
    if suffix in (".csv", ".tsv"):
        columns, rows = _read_delimited(path, text, suffix == ".tsv")
    else:
        rows = _read_json(path, text, suffix == ".jsonl")
        columns = list(rows[0][1]) if rows else []
    if not rows:
        raise DataFileError(f"{path}: no rows{' (only a header)' if columns else ''}")
    return columns, rows


def _read_delimited(path: Path, text: str, tsv: bool) -> tuple[list[str], list[Row]]:
    """CSV (standard quoting) or TSV (no quoting: quote characters are text). Rows whose
    field count differs from the header's are kept as they are, for ``_malformed``."""
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter="\t" if tsv else ",",
        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
    )
    header: list[str] | None = None
    rows: list[Row] = []
    try:
        for fields in reader:
            if not fields:
                continue  # a blank line
            if header is None:
                header = [name.strip() for name in fields]
                continue
            where = f"{path}:{reader.line_num}"
            if len(fields) != len(header):
                rows.append((where, {_WIDTH: (len(fields), len(header))}))
            else:
                rows.append((where, dict(zip(header, fields, strict=True))))
    except csv.Error as err:
        raise DataFileError(f"{path}:{reader.line_num}: not valid CSV ({err})") from None
    return header or [], rows


_WIDTH = "\x00width"
"""Key of a CSV/TSV row with the wrong number of fields: ``(fields, header fields)``."""
_NOT_OBJECT = "\x00not-object"
"""Key of a JSON row that is not an object: the value it is."""


def _read_json(path: Path, text: str, lines: bool) -> list[Row]:
    """A JSON list of objects, or JSON Lines (``.jsonl``, or a ``.json`` file holding
    several documents, as ``datasets`` reads it)."""
    if not lines:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":
                raise DataFileError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
            lines = True
        else:
            if not isinstance(document, list):
                raise DataFileError(
                    f"{path}: a JSON {type(document).__name__}; expected a list of objects "
                    "(one per row) or JSON Lines (one object per line)"
                )
            return [
                (f"{path}: item {i}", item if isinstance(item, dict) else {_NOT_OBJECT: item})
                for i, item in enumerate(document, start=1)
            ]
    rows: list[Row] = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{where}: not valid JSON ({err.msg})") from None
        rows.append((where, item if isinstance(item, dict) else {_NOT_OBJECT: item}))
    return rows


def read_hub_rows(data: Mapping, split: str) -> tuple[str, list[str], list[Row]]:
    """``(name, columns, rows)`` of one split of ``data.dataset`` (a Hugging Face dataset,
    or anything else ``datasets.load_dataset`` loads, e.g. a local folder of files) and
    ``data.dataset_config``; ``data.dataset_splits`` maps the split to the dataset's own.

    Raises:
        HubUnavailableError: the dataset (or split) cannot be loaded, e.g. offline.
    """
    import datasets

    dataset, config = data.get("dataset"), data.get("dataset_config")
    name = dataset_splits(data)[split]
    label = f"{dataset}{f' ({config})' if config else ''}[{name}]"
    try:
        table = datasets.load_dataset(dataset, config, split=name)
    except Exception as err:  # the hub raises many types (ConnectionError, OSError, ...)
        raise HubUnavailableError(
            f"could not load the Hugging Face dataset {label}: {err}. To run offline, save it "
            "to files once on a connected machine (datasets.load_dataset(...)[split]"
            ".to_json('train.jsonl')) and give data.train_file and data.validation_file "
            "instead of data.dataset"
        ) from err
    rows = [(f"{label} row {i}", row) for i, row in enumerate(table.to_list(), start=1)]
    if not rows:
        raise DataFileError(f"{label}: empty split (no rows)")
    return label, list(table.column_names), rows


def _check_columns(
    name: str, columns: list[str], text_columns: tuple[str, ...], label_column: str
) -> None:
    wanted = {c: "task.text_columns" for c in text_columns} | {label_column: "task.label_column"}
    missing = [f"{c!r} ({option})" for c, option in wanted.items() if c not in columns]
    if missing:
        raise DataFileError(
            f"{name}: no column {', '.join(missing)}; its columns: {columns} (set "
            "task.text_columns and task.label_column to the file's names)"
        )


def label_value(value: object) -> tuple[str, str, float | None]:
    """``(kind, key, number)`` of a label cell: kind ``number``, ``text`` or ``boolean``;
    key, the label's name (numbers in one spelling: ``1``, ``1.0`` and ``"1"`` are ``"1"``);
    number, its value when it is one.

    Raises:
        ValueError: an empty or null label, a list or object, or a number that is not finite.
    """
    if isinstance(value, bool):
        return "boolean", str(value).lower(), None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise ValueError("empty label")
        try:
            number = float(value)
        except ValueError:
            return "text", value, None
    elif isinstance(value, int | float):
        number = float(value)
    elif value is None:
        raise ValueError("no label (null)")
    else:
        raise ValueError(f"a label is a number or text, not a {type(value).__name__}")
    if not math.isfinite(number):
        raise ValueError(f"label {value!r} is not a finite number")
    key = str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)
    return "number", key, number


def read_custom_split(spec: GlueTaskSpec, split: str, data: Mapping) -> list[GlueExample]:
    """The rows of one split of a custom task, labels as ids of ``spec.labels`` (or float
    scores for regression).

    Rows with an empty text are kept and counted in one warning. ``data.skip_malformed``
    drops malformed rows (a wrong field count, a missing or non-text value, an empty
    label, a label outside ``spec.labels``, a score that is no number), each logged,
    instead of failing on the first.

    Raises:
        DataFileError: a missing column, an empty file, or (without ``skip_malformed``) a
            malformed row, named by file, line and column.
    """
    name, columns, rows = read_rows(data, split)
    _check_columns(name, columns, spec.text_columns, spec.label_column)
    examples: list[GlueExample] = []
    empty = 0
    skip = bool(data.get("skip_malformed"))
    for where, values in rows:
        try:
            example = _parse_row(values, spec)
        except ValueError as err:
            message = f"{where}: malformed row ({err})"
            if not skip:
                raise DataFileError(
                    message + " (set data.skip_malformed=true to skip such rows)"
                ) from None
            logger.warning("skipped %s", message)
            continue
        empty += not example.text_a or example.text_b == ""
        examples.append(example)
    if empty:
        logger.warning("%s: %d row(s) with an empty text, kept", name, empty)
    if not examples:
        raise DataFileError(f"{name}: every row was malformed and skipped; no rows left")
    return examples


def _parse_row(values: Mapping[str, object], spec: GlueTaskSpec) -> GlueExample:
    """One row as an example; ``ValueError`` naming the column when it is malformed."""
    if _WIDTH in values:
        fields, width = values[_WIDTH]
        raise ValueError(f"{fields} fields, the header has {width}")
    if _NOT_OBJECT in values:
        item = values[_NOT_OBJECT]
        raise ValueError(f"a JSON {type(item).__name__}, not an object: {item!r:.80}")
    absent = [c for c in (*spec.text_columns, spec.label_column) if c not in values]
    if absent:
        raise ValueError(f"no column {', '.join(map(repr, absent))} in this row")
    texts = []
    for column in spec.text_columns:
        value = values[column]
        if not isinstance(value, str):
            what = "null" if value is None else f"{value!r} ({type(value).__name__})"
            raise ValueError(f"column {column!r} holds {what}, not text")
        texts.append(value.strip())
    column = spec.label_column
    try:
        _, key, number = label_value(values[column])
    except ValueError as err:
        raise ValueError(f"column {column!r}: {err}") from None
    if spec.is_regression:
        if number is None:
            raise ValueError(
                f"column {column!r}: score {key!r} is not a number (a regression metric is "
                "chosen; for classes choose task.metric=acc, f1 or mcc)"
            )
        label: int | float = number
    elif key in spec.labels:
        label = spec.labels.index(key)
    else:
        shown = ", ".join(map(repr, spec.labels[:10])) + (", ..." if len(spec.labels) > 10 else "")
        fractional = number is not None and not number.is_integer()
        raise ValueError(
            f"column {column!r}: label {key!r} is not one of the task's {len(spec.labels)} "
            f"labels [{shown}] (task.labels, or those of the training data)"
            + ("; scores? choose task.metric=pearson or spearman" if fractional else "")
        )
    return GlueExample(texts[0], texts[1] if spec.is_pair else None, label)


def training_labels(task: Mapping, data: Mapping) -> list[str]:
    """The distinct labels of the training split's label column (``task.label_column``),
    sorted (numerically when they are numbers), in ``label_value`` spelling. Rows without
    a usable label are left to ``read_custom_split`` to report.

    Raises:
        DataFileError: a missing column, fewer than two labels, or numbers and text (or
            booleans) mixed in the label column, naming a row of each.
    """
    text_columns, label_column = custom_columns(task)
    name, columns, rows = read_rows(data, "train")
    _check_columns(name, columns, text_columns, label_column)
    first: dict[str, tuple[str, str]] = {}
    numbers: dict[str, float | None] = {}
    for where, values in rows:
        try:
            kind, key, number = label_value(values.get(label_column))
        except ValueError:
            continue
        first.setdefault(kind, (where, key))
        numbers[key] = number
    if len(first) > 1:
        seen = "; ".join(f"{where}: {kind} {key!r}" for kind, (where, key) in first.items())
        raise DataFileError(
            f"{name}: column {label_column!r} mixes label types ({seen}); a label column "
            "holds numbers or text, not both: fix those rows, or give task.labels"
        )
    labels = sorted(numbers, key=numbers.get) if "number" in first else sorted(numbers)
    if len(labels) < 2:
        raise DataFileError(
            f"{name}: column {label_column!r} holds {len(labels)} distinct label(s) "
            f"{labels}; classification needs two or more (for a score choose "
            "task.metric=pearson or spearman)"
        )
    return labels


def resolve_task(task: DictConfig, data: DictConfig) -> DictConfig:
    """The task node a run builds its model from: for a custom classification task, with
    ``task.labels`` in ``label_value`` spelling, read from the training data when unset;
    any other task node unchanged.

    Raises:
        ConfigError: a bad custom task node or ``data`` options (``custom_splits``), or
            another task given a custom task's data options (``data.train_file``, ...).
        DataFileError: the training data cannot give a label set (``training_labels``).
    """
    if task.get("kind") != "custom":
        given = [f"data.{k}" for k in CUSTOM_DATA_OPTIONS if data.get(k)]
        if given:
            raise ConfigError(
                f"{', '.join(given)}: read by task=custom only (task={task.get('name')} reads "
                "its own data); add task=custom to train on your own data"
            )
        return task
    custom_columns(task)
    custom_splits(data)
    if custom_metric(task) in REGRESSION_METRICS:
        return task
    given = task.get("labels")
    if not given:
        labels = training_labels(task, data)
    else:
        try:
            labels = [label_value(x)[1] for x in given]
        except ValueError as err:
            raise ConfigError(f"task.labels={list(given)!r}: {err}") from None
    resolved = OmegaConf.create(OmegaConf.to_container(task, resolve=True))
    with open_dict(resolved):
        resolved.labels = labels
    return resolved
