"""AdamW over the trainable parameters with linear warmup and decay, or a constant LR."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR

from mole_lightning.errors import ConfigError

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters only, biases and norms without weight decay."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(NO_DECAY) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """LR factor: 0 → 1 over ``warmup`` steps, then linearly down to 0 at ``total``."""
    if step < warmup:
        return step / max(warmup, 1)
    return max(0.0, (total - step) / max(total - warmup, 1))


def build_optimizer(
    module: nn.Module,
    optim: DictConfig | dict,
    total_steps: int | float,
    schedule_start: int = 0,
    fresh_schedule: bool = False,
) -> dict:
    """Returns Lightning's optimizer dict: AdamW and a per-step learning-rate schedule.

    Args:
        optim: ``lr``, ``weight_decay``, ``schedule`` (``linear``: warmup then linear decay
            to 0 at ``total_steps``, the default; ``constant``: ``lr`` throughout),
            ``warmup_ratio`` (or ``warmup_steps``), ``betas``, ``eps``.
        total_steps: the run's optimizer steps (``trainer.estimated_stepping_batches``).
        schedule_start: the global step at which this optimizer starts (after a prune).
        fresh_schedule: warm up and decay anew over the steps left after
            ``schedule_start``; otherwise the run's schedule goes on from there.
    """
    optimizer = AdamW(
        param_groups(module, optim["weight_decay"]),
        lr=optim["lr"],
        betas=tuple(optim.get("betas", (0.9, 0.999))),
        eps=optim.get("eps", 1e-8),
    )
    schedule = optim.get("schedule", "linear")
    if schedule not in ("linear", "constant"):
        raise ConfigError(f"optim.schedule={schedule!r}; valid: linear, constant")
    total = max(int(min(total_steps, 2**62)) - (schedule_start if fresh_schedule else 0), 1)
    warmup = optim.get("warmup_steps") or int(optim.get("warmup_ratio", 0.0) * total)
    offset = 0 if fresh_schedule else schedule_start

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        return linear_warmup_decay(step + offset, warmup, total)

    scheduler = LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
