"""The E2E NLG challenge: reading its CSV files or the hub, and GPT-2 LM examples.

The official release has ``trainset.csv``, ``devset.csv`` and ``testset_w_refs.csv``, each
with a ``mr,ref`` header and one (meaning representation, reference) pair per row; an MR
such as ``name[The Vaults], eatType[pub], near[Café Adriatic]`` has several references.
Training reads the pairs; evaluation groups the references of each MR.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mole_lightning.core.e2e_text import parse_mr
from mole_lightning.errors import ConfigError, DataFileError, HubUnavailableError

SPLIT_FILES = {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"}
"""Split name -> file of the official release."""
HUB_DATASET = "e2e_nlg"
"""Hub dataset id; its columns are ``meaning_representation`` and ``human_reference``."""


class E2EPair(NamedTuple):
    """One training pair: a meaning representation and one human reference."""

    mr: str
    ref: str


@dataclass(frozen=True)
class E2EExample:
    """One meaning representation with all its references (an evaluation item)."""

    mr: str
    refs: tuple[str, ...]


def read_e2e_csv(path: str | Path) -> list[E2EPair]:
    """Reads an official E2E CSV file (``mr,ref`` header, quoted fields) in file order.

    Raises:
        DataFileError: the file is missing, its header is not ``mr,ref``, or a row is
            malformed (wrong field count, bad quoting, empty reference, bad MR); the
            message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(
            f"{path}: file not found (expected the official E2E release: {', '.join(SPLIT_FILES.values())})"
        )
    pairs: list[E2EPair] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, strict=True)
        while True:
            line = reader.line_num + 1  # where the next record starts
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raise DataFileError(f"{path}:{line}: malformed CSV ({err})") from None
            if line == 1:
                if [h.strip().lower() for h in row] != ["mr", "ref"]:
                    raise DataFileError(f"{path}:1: header must be 'mr,ref', found {row}")
            else:
                pairs.append(_parse_row(path, line, row))
    if reader.line_num == 0:
        raise DataFileError(f"{path}: empty file (expected a 'mr,ref' header)")
    return pairs


def _parse_row(path: Path, line: int, row: list[str]) -> E2EPair:
    if len(row) != 2:
        raise DataFileError(
            f"{path}:{line}: expected 2 fields (mr, ref), found {len(row)}: {row!r:.200}"
        )
    mr, ref = row[0].strip(), row[1].strip()
    if not ref:
        raise DataFileError(f"{path}:{line}: empty reference for MR {mr!r}")
    try:
        parse_mr(mr)
    except ValueError as err:
        raise DataFileError(f"{path}:{line}: bad meaning representation ({err})") from None
    return E2EPair(mr, ref)


def group_references(pairs: list[E2EPair]) -> list[E2EExample]:
    """Groups pairs by MR, in order of each MR's first row."""
    refs: dict[str, list[str]] = {}
    for mr, ref in pairs:
        refs.setdefault(mr, []).append(ref)
    return [E2EExample(mr, tuple(r)) for mr, r in refs.items()]


def load_e2e_split(split: str, data_dir: str | Path | None) -> list[E2EPair]:
    """Reads one split (``train``, ``validation`` or ``test``) as pairs.

    With ``data_dir`` set, reads ``<data_dir>/<SPLIT_FILES[split]>``; with ``None``, loads
    the hub's ``e2e_nlg`` dataset.

    Raises:
        ConfigError: unknown split.
        HubUnavailableError: the hub cannot be reached (offline: set ``data.dir``).
    """
    if split not in SPLIT_FILES:
        raise ConfigError(f"unknown E2E split {split!r}; valid splits: {', '.join(SPLIT_FILES)}")
    if data_dir is not None:
        return read_e2e_csv(Path(data_dir) / SPLIT_FILES[split])
    import datasets

    try:
        table = datasets.load_dataset(HUB_DATASET, split=split)
    except (ConnectionError, OSError) as err:
        raise HubUnavailableError(
            f"could not load {HUB_DATASET!r} ({split}) from the Hugging Face hub: {err}. "
            "To run offline, pass data.dir=<folder with trainset.csv, devset.csv, "
            "testset_w_refs.csv> (e.g. data.dir=../shared/data/e2e)."
        ) from err
    return [
        E2EPair(mr, ref)
        for mr, ref in zip(table["meaning_representation"], table["human_reference"], strict=True)
    ]


def lm_example(
    prompt: list[int], target: list[int], max_length: int, pad_id: int
) -> dict[str, list[int]]:
    """Lays out one causal-LM example: ``prompt + target``, right-padded with ``pad_id``.

    Args:
        prompt: the conditioning tokens (no loss).
        target: the tokens the LM loss covers.
        max_length: length of every returned list. A longer target is cut at the end (its
            EOS is then lost).
        pad_id: the padding token.

    Returns:
        ``input_ids``, ``attention_mask`` (1 on prompt and target) and ``labels`` (the
        target's ids, -100 on the prompt and padding); each of length ``max_length``.

    Raises:
        ValueError: the prompt leaves no room for a target token.
    """
    if len(prompt) >= max_length:
        raise ValueError(f"the prompt has {len(prompt)} tokens, max_length is {max_length}")
    target = target[: max_length - len(prompt)]
    padding = max_length - len(prompt) - len(target)
    return {
        "input_ids": prompt + target + [pad_id] * padding,
        "attention_mask": [1] * (len(prompt) + len(target)) + [0] * padding,
        "labels": [-100] * len(prompt) + target + [-100] * padding,
    }
