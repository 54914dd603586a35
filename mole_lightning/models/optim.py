"""AdamW over the trainable parameters with linear warmup and decay, or a constant LR."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig
from torch import nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR

from mole_lightning.errors import ConfigError

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


@dataclass(frozen=True)
class GroupSettings:
    """Parameters that train with their own learning rate and weight decay.

    A submodule that defines ``optimizer_group() -> GroupSettings | None`` gets them
    (MoLEx's routers: ``method.router_lr`` / ``method.router_weight_decay``).

    Attributes:
        params: the parameters (those that do not train are left out anyway).
        lr: their learning rate (``None``: the run's).
        weight_decay: their weight decay (``None``: the run's); biases and norms get none.
    """

    params: tuple[nn.Parameter, ...]
    lr: float | None = None
    weight_decay: float | None = None


def param_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Trainable parameters only, biases and norms without weight decay.

    Returns AdamW groups with ``lr`` and ``weight_decay`` set: the run's (``lr``,
    ``weight_decay``), then one pair (decayed, not decayed) per submodule's
    ``GroupSettings``. Empty groups are left out.
    """
    settings = [
        s for m in module.modules() if hasattr(m, "optimizer_group") if (s := m.optimizer_group())
    ]
    rates = [(lr, weight_decay)] + [
        (lr if s.lr is None else s.lr, weight_decay if s.weight_decay is None else s.weight_decay)
        for s in settings
    ]
    owner = {id(p): i for i, s in enumerate(settings, start=1) for p in s.params}
    buckets: list[tuple[list, list]] = [([], []) for _ in rates]
    for name, p in module.named_parameters():
        if p.requires_grad:
            decay, no_decay = buckets[owner.get(id(p), 0)]
            (no_decay if name.endswith(NO_DECAY) else decay).append(p)
    groups = []
    for (decay, no_decay), (group_lr, group_decay) in zip(buckets, rates, strict=True):
        groups.append({"params": decay, "lr": group_lr, "weight_decay": group_decay})
        groups.append({"params": no_decay, "lr": group_lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


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
        param_groups(module, optim["lr"], optim["weight_decay"]),
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
