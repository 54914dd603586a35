"""Adversarial GLUE (Wang et al., 2021): reading its dev sets with an explicit label mapping.

``advglue/dev.json`` holds one list per set (``sst2``, ``rte``, ``qnli``, ``qqp``,
``mnli``, ``mnli-mm``) whose labels are GLUE dataset ids. Each set's config
(``conf/eval/advglue.yaml``) names the GLUE task it pairs with, its text fields and the
label *name* of every AdvGLUE id; rows get the id of that name in our task's label list,
so a task whose labels are ordered differently still maps right.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from mole_lightning.core.tasks import get_task
from mole_lightning.data.glue import GlueExample
from mole_lightning.errors import ConfigError, DataFileError


def advglue_sets(task: str, sets: Mapping) -> list[str]:
    """The AdvGLUE sets that evaluate a checkpoint of ``task`` (MNLI: ``mnli``, ``mnli-mm``).

    Raises:
        ConfigError: AdvGLUE has no set for ``task``.
    """
    names = [name for name, node in sets.items() if node["task"] == task]
    if not names:
        covered = sorted({node["task"] for node in sets.values()})
        raise ConfigError(
            f"AdvGLUE has no set for task {task!r} (it covers {', '.join(covered)}); evaluate "
            f"this checkpoint with eval=dev,perturb, or add a set under suites.advglue.sets"
        )
    return names


def read_advglue(path: str | Path, name: str, node: Mapping) -> list[GlueExample]:
    """The examples of one AdvGLUE set, labels mapped to ids of ``node['task']``.

    Args:
        path: ``advglue/dev.json``.
        name: the set (a key of the file).
        node: ``{task, fields: [text field(s)], labels: [name of AdvGLUE id 0, 1, ...]}``.

    Raises:
        DataFileError: the file or the set is missing, or an item lacks a field or has a
            label id the mapping does not name.
        ConfigError: a mapped label name is not a label of the task.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(
            f"{path}: AdvGLUE file not found. It ships as ../shared/data/advglue/dev.json (see "
            "the data README); point suites.advglue.file at your copy"
        )
    items = json.loads(path.read_text()).get(name)
    if items is None:
        raise DataFileError(f"{path}: no {name!r} list in the AdvGLUE file")
    spec = get_task(node["task"])
    names = list(node["labels"])
    unknown = [label for label in names if label not in spec.labels]
    if unknown:
        raise ConfigError(
            f"suites.advglue.sets.{name}.labels names {unknown}, not labels of task "
            f"{spec.name!r} ({list(spec.labels)})"
        )
    fields = list(node["fields"])
    examples = []
    for item in items:
        missing = [f for f in [*fields, "label"] if f not in item]
        if missing or not 0 <= item["label"] < len(names):
            raise DataFileError(
                f"{path}: {name} item {item.get('idx')} lacks {missing or 'a mapped label'} "
                f"(label {item.get('label')!r}; mapping {names})"
            )
        texts = [str(item[f]) for f in fields]
        examples.append(
            GlueExample(
                texts[0],
                texts[1] if len(texts) > 1 else None,
                spec.labels.index(names[item["label"]]),
            )
        )
    return examples
