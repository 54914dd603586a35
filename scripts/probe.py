"""Layer-wise linear probing of a pre-trained backbone or a trained checkpoint.

    python scripts/probe.py backbone=minilm                          # the pre-trained backbone
    python scripts/probe.py ckpt_path=<run dir or .ckpt>             # MoLEx: the mixed outputs
    python scripts/probe.py ckpt_path=<molex run> compare_ckpt=<lora run>   # + difference heatmap
    python scripts/probe.py ckpt_path=<run> dataset=sst2             # spaCy-parsed SST-2 (silver)

Writes probe_<dataset>.{json,csv,png} (layer × property accuracy, majority baseline row)
into the run directory (logs/probe/<backbone> for the pre-trained backbone); see README.md.
"""

from __future__ import annotations

from mole_lightning.probing.cli import main

if __name__ == "__main__":
    main()
