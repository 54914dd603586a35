"""Evaluate a trained checkpoint on evaluation suites; results go into its run directory.

    python scripts/evaluate.py ckpt_path=<run dir or .ckpt> eval=dev,advglue,perturb
    python scripts/evaluate.py ckpt_path=<stsb run> eval=transfer suites.transfer.targets=[mrpc]

Suites (conf/eval/): dev, advglue, perturb, transfer. Each writes eval_<suite>.json and
eval_<suite>.csv (perturb also eval_perturb.png) into the run directory; see README.md.
"""

from __future__ import annotations

from mole_lightning.evaluation.cli import main

if __name__ == "__main__":
    main()
