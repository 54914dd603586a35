"""LoRA through peft, or on slices of a fused qkv projection (``sliced``); options:
``config``, build: ``method``."""

from mole_lightning.methods.lora.config import LoraConfig

__all__ = ["LoraConfig"]
