"""``python train.py task=sst2 method=mole [overrides]``: see README.md and conf/."""

from mole_lightning.train import main

if __name__ == "__main__":
    main()
