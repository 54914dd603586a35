"""mole_lightning: mixture-of-experts PEFT (MoLE, MoLEx) on PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
