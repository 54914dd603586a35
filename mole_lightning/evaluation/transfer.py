"""Zero-shot transfer: a checkpoint of one task scored on another task's dev set through a
declared mapping (``conf/transfer/<source>_to_<target>.yaml``).

Mapping kinds:

- ``labels``: source class name -> target class name (``labels: {entailment: entailment,
  neutral: not_entailment, ...}``), applied to the argmax class;
- ``threshold``: a regression source; a score ``>= threshold`` is class ``above``, else
  ``below`` (STS-B -> MRPC);
- ``probability``: a classification source, regression target; the probability of class
  ``label`` times ``scale`` is the predicted score (MRPC -> STS-B).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mole_lightning.core.tasks import GlueTaskSpec, get_task
from mole_lightning.errors import ConfigError
from mole_lightning.evaluation.predict import Predictions

MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "conf" / "transfer"
KINDS = ("labels", "threshold", "probability")


def mapped_targets(source: str, mappings_dir: str | Path = MAPPINGS_DIR) -> list[str]:
    """The target tasks a checkpoint of ``source`` has a declared mapping to, sorted."""
    prefix = f"{source}_to_"
    return sorted(p.stem.removeprefix(prefix) for p in Path(mappings_dir).glob(f"{prefix}*.yaml"))


def target_data_missing(target: str, data_dir: str | Path | None) -> str | None:
    """Why the dev set of ``target`` cannot be read from ``data_dir`` (a run's
    ``data.dir``; ``None``: the hub), else ``None``."""
    if data_dir is None:
        return None
    spec = get_task(target)
    path = Path(data_dir) / spec.folder / f"{next(iter(spec.dev_splits.values()))}.tsv"
    return None if path.is_file() else f"the run's data.dir has no {spec.folder}/{path.name}"


def declared_pairs(mappings_dir: str | Path = MAPPINGS_DIR) -> list[str]:
    """Every declared mapping as ``<source>_to_<target>``."""
    return sorted(p.stem for p in Path(mappings_dir).glob("*_to_*.yaml"))


def load_mapping(source: str, target: str, mappings_dir: str | Path = MAPPINGS_DIR) -> DictConfig:
    """The mapping ``<mappings_dir>/<source>_to_<target>.yaml``, checked against both tasks.

    Raises:
        ConfigError: no such file (the message lists the pairs there are and how to add
            one), or a mapping that does not fit the two tasks.
    """
    path = Path(mappings_dir) / f"{source}_to_{target}.yaml"
    if not path.is_file():
        known = declared_pairs(mappings_dir)
        raise ConfigError(
            f"no transfer mapping from {source!r} to {target!r}: add {path} (kind labels, "
            f"threshold or probability; see the files beside it). Declared pairs: {', '.join(known)}"
        )
    mapping = OmegaConf.load(path)
    check_mapping(mapping, get_task(source), get_task(target), path)
    return mapping


def check_mapping(
    mapping: DictConfig, source: GlueTaskSpec, target: GlueTaskSpec, path: Path
) -> None:
    """Raises ``ConfigError`` when ``mapping`` cannot turn ``source`` outputs into ``target``
    predictions."""
    kind = mapping.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{path}: kind={kind!r}; valid kinds: {', '.join(KINDS)}")
    needs = {
        "labels": (not source.is_regression and not target.is_regression),
        "threshold": source.is_regression and not target.is_regression,
        "probability": not source.is_regression and target.is_regression,
    }
    if not needs[kind]:
        raise ConfigError(f"{path}: kind {kind} does not fit {source.name} -> {target.name}")
    if kind == "labels":
        names = dict(mapping.labels)
        bad = [k for k in names if k not in source.labels] + [
            v for v in names.values() if v not in target.labels
        ]
        missing = [label for label in source.labels if label not in names]
        if bad or missing:
            raise ConfigError(
                f"{path}: labels must map every {source.name} label {list(source.labels)} to a "
                f"{target.name} label {list(target.labels)}; unknown {bad}, unmapped {missing}"
            )
    elif kind == "threshold":
        bad = [v for v in (mapping.above, mapping.below) if v not in target.labels]
        if bad:
            raise ConfigError(f"{path}: above/below {bad} not labels of {target.name}")
    elif mapping.label not in source.labels:
        raise ConfigError(f"{path}: label {mapping.label!r} not a label of {source.name}")


def map_predictions(
    mapping: DictConfig, source: GlueTaskSpec, target: GlueTaskSpec, predictions: Predictions
) -> torch.Tensor:
    """``[N]`` target class ids (or scores) from the source model's outputs."""
    outputs = predictions.outputs
    if mapping.kind == "labels":
        table = torch.tensor([target.labels.index(mapping.labels[name]) for name in source.labels])
        return table[outputs.argmax(-1)]
    if mapping.kind == "threshold":
        above, below = target.labels.index(mapping.above), target.labels.index(mapping.below)
        return torch.where(outputs >= float(mapping.threshold), above, below)
    column = source.labels.index(mapping.label)
    return predictions.probabilities[:, column] * float(mapping.get("scale", 1.0))
