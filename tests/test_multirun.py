"""Hydra multirun through the real CLI, then scripts/collect.py and plot_runs.py on its output.

Also: the sweep configs expand to the grids they promise, W&B runs are grouped by
(task, method) and tagged by seed, and Lightning's relaunching DDP is refused inside a
multirun (its workers would re-run the whole sweep).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, REPO, compose

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}


def cli(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def sweep_overrides(glue_dir: Path, log_dir: Path, cache_dir: Path) -> list[str]:
    return [
        "backbone=tiny-bert",
        f"data.dir={glue_dir}",
        "trainer.max_steps=2",
        # two batches per epoch, so the epoch-end validation runs within max_steps
        "+trainer.limit_train_batches=2",
        "trainer.max_epochs=1",
        "+trainer.limit_val_batches=2",
        "data.batch_size=8",
        "data.num_workers=0",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0",
        f"paths.log_dir={log_dir}",
        f"paths.cache_dir={cache_dir}",
    ]


def test_multirun_every_combination_then_collect(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    run = cli(
        [
            "train.py",
            "-m",
            "task=rte,mrpc",
            "method=lora",
            "seed=1,2",
            *sweep_overrides(glue_dir, logs, cache_dir),
        ]
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (sweep,) = (logs / "train" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == [
        "0_rte_lora_seed1",
        "1_rte_lora_seed2",
        "2_mrpc_lora_seed1",
        "3_mrpc_lora_seed2",
    ]
    for job in jobs:
        info = json.loads((sweep / job / "run_info.json").read_text())
        assert info["status"] == "finished"
        assert f"{info['task']}_{info['method']}_seed{info['seed']}" in job
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["params/trainable"] > 0 and "best/val/acc" in metrics

    failed = sweep / "4_rte_adapter_seed1"
    failed.mkdir()
    (failed / "run_info.json").write_text(
        json.dumps(
            {
                "status": "failed",
                "task": "rte",
                "method": "adapter",
                "seed": 1,
                "error": "RuntimeError: boom",
            }
        )
    )
    running = sweep / "5_mrpc_adapter_seed1"
    running.mkdir()
    (running / "run_info.json").write_text(
        json.dumps(
            {
                "status": "running",
                "task": "mrpc",
                "method": "adapter",
                "seed": 1,
                "started": "2026-01-01T00:00:00",
            }
        )
    )

    out = cli(["scripts/collect.py", str(sweep), "--csv", str(tmp_path / "table.csv")], timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "| method | trainable params | MRPC (acc) | RTE (acc) | GLUE avg |" in lines
    lora = next(line for line in lines if line.startswith("| lora "))
    cells = [c.strip() for c in lora.strip("|").split("|")]
    assert cells[1] == "3.17K"  # tiny-bert: LoRA r=8 on q,v of 2 layers + a 2-class head
    assert cells[2].endswith("(n=2)") and " ± " in cells[2]
    assert cells[3].endswith("(n=2)") and " ± " in cells[3]
    assert float(cells[4]) == pytest.approx(
        (float(cells[2].split()[0]) + float(cells[3].split()[0])) / 2, abs=0.06
    )
    assert "- `4_rte_adapter_seed1`: failed: RuntimeError: boom" in lines
    assert any(
        line.startswith("- `5_mrpc_adapter_seed1`: unfinished: status running") for line in lines
    )
    assert "adapter" not in {line.split("|")[1].strip() for line in lines if line.startswith("| ")}

    plots = cli(["scripts/plot_runs.py", str(sweep), "--out", str(tmp_path / "fig")], timeout=60)
    assert plots.returncode == 0, plots.stderr
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        "curves_mrpc.png",
        "curves_rte.png",
    ]


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    run = cli(
        [
            "train.py",
            "-m",
            "task=rte",
            "method=molex",
            "method.alpha=0.5,2,0.3",
            *sweep_overrides(glue_dir, logs, cache_dir),
        ]
    )
    assert run.returncode != 0  # the sweep reports that a job failed, after running them all
    assert "error: molex.alpha=2.0 must lie in [0, 1]" in run.stderr  # a float option
    (sweep,) = (logs / "train" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == [
        "0_rte_molex_seed42_alpha0.5",
        "1_rte_molex_seed42_alpha2",
        "2_rte_molex_seed42_alpha0.3",
    ]
    status = [json.loads((sweep / j / "run_info.json").read_text())["status"] for j in jobs]
    assert status == ["finished", "failed", "finished"]
    assert (sweep / jobs[2] / "metrics.json").is_file()

    out = cli(["scripts/collect.py", str(sweep)], timeout=60)
    assert out.returncode == 0, out.stderr
    assert (
        "- `1_rte_molex_seed42_alpha2`: failed: ConfigError: molex.alpha=2.0 must lie in [0, 1]"
        in out.stdout.splitlines()
    )


def test_ddp_inside_multirun_is_refused(glue_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    run = cli(
        [
            "train.py",
            "-m",
            "task=rte",
            "method=lora",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            *sweep_overrides(glue_dir, tmp_path / "logs", cache_dir),
        ]
    )
    assert run.returncode != 0
    assert "error: trainer.strategy=ddp in a Hydra multirun" in run.stderr
    assert not list(tmp_path.glob("logs/train/multiruns/*/*/train_ddp_process_1.log"))


def test_wandb_runs_grouped_by_task_and_method_tagged_by_seed(tmp_path: Path) -> None:
    from mole_lightning.utils.loggers import build_loggers

    cfg = compose(
        ["task=mrpc", "method=adapter", "seed=0", "backbone=minilm", "logger=wandb"], tmp_path
    )
    logger, csv_logger = build_loggers(cfg, tmp_path)  # csv/metrics.csv beside W&B
    assert type(csv_logger).__name__ == "CSVLogger"
    init = logger._wandb_init
    assert init["group"] == "mrpc-adapter"
    assert init["tags"] == ["seed-0", "mrpc", "adapter", "minilm"]
    assert init["mode"] == "offline" and init["dir"] == str(tmp_path)


def expand(params: dict[str, str], cli_overrides: list[str] = ()) -> list[list[str]]:
    """The jobs Hydra's basic sweeper runs for config params plus command-line overrides."""
    overrides = OverridesParser.create().parse_overrides(
        [f"{k}={v}" for k, v in params.items()] + list(cli_overrides)
    )
    return BasicSweeper.split_arguments(overrides, None)[0]


def compose_with_hydra(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mole_lightning.models.config_store import register_conf

    register_conf()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(
            config_name="train.yaml", overrides=overrides, return_hydra_config=True
        )


def test_paper_grid_expands_to_every_task_method_seed() -> None:
    cfg = compose_with_hydra(["+sweep=paper_grid"])
    jobs = expand(dict(cfg.hydra.sweeper.params))
    assert len(jobs) == 4 * 5 * 3
    assert len({tuple(j) for j in jobs}) == 60
    assert {j[0] for j in jobs} == {f"task={t}" for t in ("cola", "sst2", "mrpc", "rte")}
    assert {j[1] for j in jobs} == {
        f"method={m}" for m in ("lora", "adapter", "mole", "molex", "full")
    }
    assert {j[2] for j in jobs} == {"seed=1", "seed=2", "seed=3"}
    for job in jobs:  # every choice is a real config option
        group, option = job[0].split("=")
        assert (CONF_DIR / group / f"{option}.yaml").is_file()
        group, option = job[1].split("=")
        assert (CONF_DIR / group / f"{option}.yaml").is_file()
    assert cfg.task_name == "paper_grid"
    narrowed = expand(dict(cfg.hydra.sweeper.params), ["method=lora", "task=rte,cola"])
    assert len(narrowed) == 2 * 3 and all(j[1] == "method=lora" for j in narrowed)


def test_lr_search_grid_and_job_names() -> None:
    cfg = compose_with_hydra(["hparams_search=lr_search"])
    assert cfg.task_name == "lr_search"
    jobs = expand(dict(cfg.hydra.sweeper.params))
    assert len(jobs) == 4 * 3
    assert sorted({float(j[0].removeprefix("optim.lr=")) for j in jobs}) == [1e-4, 3e-4, 1e-3, 3e-3]

    # the lr search names its jobs as every sweep does: after the swept values
    def subdir(c):
        return c.hydra.sweep._get_node("subdir")._value()

    assert subdir(cfg) == subdir(compose_with_hydra([]))
    assert subdir(cfg).startswith("${hydra.job.num}_${task.name}_${method.name}_seed${seed}")


def test_job_folders_are_named_after_the_swept_values(
    glue_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """A real 2-job sweep of optim.lr: the folders differ by the swept value (its last key
    part), none of the fixed overrides (data.dir, trainer.*, paths.*) is in the name."""
    logs = tmp_path / "logs"
    run = cli(
        [
            "train.py",
            "-m",
            "task=rte",
            "method=lora",
            "optim.lr=1e-4,3e-3",
            *sweep_overrides(glue_dir, logs, cache_dir),
        ]
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (sweep,) = (logs / "train" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == [
        "0_rte_lora_seed42_lr0.0001",
        "1_rte_lora_seed42_lr0.003",
    ]  # as Hydra writes them
    for job, lr in zip(jobs, (1e-4, 3e-3), strict=True):
        assert json.loads((sweep / job / "run_info.json").read_text())["status"] == "finished"
        assert f"lr: {lr}" in (sweep / job / "resolved_config.yaml").read_text()
        # a job folder can be given back to Hydra (resume, evaluate.py): no "=" or ","
        override = OverridesParser.create().parse_override(f"ckpt_path={sweep / job}")
        assert override.value() == str(sweep / job)


def test_swept_suffix_of_sweeper_params_and_shared_key_names(tmp_path: Path) -> None:
    """The lr search's sweeper params name the lr (not the seed, already in the name); two
    swept keys ending alike keep their full names; a group swept by its option."""
    from mole_lightning.utils.sweep_names import swept_suffix

    cfg = compose_with_hydra(["hparams_search=lr_search"])
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [hparams_search=lr_search, task=rte]\n"
        "  sweeper:\n    params:\n      optim.lr: 1e-4,3e-4,1e-3,3e-3\n      seed: 1,2,3\n"
    )
    exclude = list(cfg.hydra.job.config.override_dirname.exclude_keys)
    job = ["hparams_search=lr_search", "task=rte", "optim.lr=3e-4", "seed=2"]
    assert swept_suffix(str(tmp_path), job, exclude) == "_lr0.0003"
    swept = [
        "optim.lr=1,2",
        "method.lr=3,4",
        "backbone=minilm,tiny-bert",
        "data.dir=/x/y",
        "seed=1,2",
    ]
    OmegaConf.save({"hydra": {"overrides": {"task": swept}}}, tmp_path / "multirun.yaml")
    job = ["optim.lr=1", "method.lr=4", "backbone=tiny-bert", "data.dir=/x/y", "seed=2"]
    assert swept_suffix(str(tmp_path), ["optim.lr='a=b,c/d'"], exclude) == "_lra-b-c-d"
    assert swept_suffix(str(tmp_path), job, exclude) == "_backbonetiny-bert_method.lr4_optim.lr1"
    assert swept_suffix(str(tmp_path / "no_sweep"), job, exclude) == ""
