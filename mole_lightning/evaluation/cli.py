"""``python scripts/evaluate.py ckpt_path=<run dir or .ckpt> eval=dev,advglue,perturb``."""

from __future__ import annotations

import sys
import time

import hydra
from omegaconf import DictConfig

from mole_lightning.core.paths import CONFIG_DIR
from mole_lightning.errors import ConfigError, reported_as_exit
from mole_lightning.evaluation.checkpoint import load_eval_run
from mole_lightning.evaluation.report import format_table, write_result
from mole_lightning.evaluation.suites import SUITES, Evaluator, SuiteResult


def evaluate(cfg: DictConfig) -> list[SuiteResult]:
    """Loads ``cfg.ckpt_path`` and runs every suite under ``cfg.suites`` in order, writing
    each result into the run directory; returns the results."""
    unknown = [name for name in cfg.suites if name not in SUITES]
    if unknown:
        raise ConfigError(f"unknown eval suite(s) {unknown}; valid: {', '.join(SUITES)}")
    run = load_eval_run(
        cfg.ckpt_path,
        overrides={
            "data.dir": cfg.data_dir,
            "paths.cache_dir": cfg.cache_dir,
            "data.eval_batch_size": cfg.eval_batch_size,
            "data.num_workers": cfg.num_workers,
        },
        device=cfg.device,
    )
    print(f"evaluating {run.ckpt} ({run.task}, {run.cfg.method.name}) on {run.device}")
    evaluator = Evaluator(run)
    results = []
    for name, node in cfg.suites.items():
        start = time.perf_counter()
        for result in SUITES[name](evaluator, node):
            paths = write_result(run, result)
            print(f"\n{result.name} ({time.perf_counter() - start:.1f} s):")
            print(format_table(result.rows))
            for note in result.notes:
                print(f"note: {note}")
            print("wrote " + ", ".join(str(p) for p in paths))
            results.append(result)
    return results


def list_override(argv: list[str], key: str = "eval") -> list[str]:
    """Rewrites ``eval=a,b`` into Hydra's list syntax ``eval=[a,b]`` (outside multirun, where
    a comma would otherwise be a sweep)."""
    if "-m" in argv or "--multirun" in argv:
        return argv
    prefix = f"{key}="
    return [
        f"{prefix}[{a[len(prefix) :]}]"
        if a.startswith(prefix) and "," in a and not a[len(prefix) :].startswith("[")
        else a
        for a in argv
    ]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate.yaml")
def hydra_main(cfg: DictConfig) -> None:
    with reported_as_exit():
        evaluate(cfg)


def main() -> None:
    sys.argv = [sys.argv[0], *list_override(sys.argv[1:])]
    hydra_main()
