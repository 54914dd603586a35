"""AdamW over the trainable parameters with linear warmup and decay, or a constant LR."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from omegaconf import DictConfig
from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR

from mole_lightning.errors import ConfigError

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
ADAMW_KINDS = ("torch", "transformers_legacy")


class LegacyAdamW(Optimizer):
    """The AdamW of transformers before 4.x's deprecation (``transformers.AdamW``, used by
    its ``Trainer``; microsoft/LoRA's ``src/optimizer.py`` is a copy), which the MoLEx
    authors' scripts train with. Per parameter with gradient ``g`` at step ``t``:

        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
        p <- p - lr * wd * p        (decoupled decay AFTER the update, on the updated p)

    against ``torch.optim.AdamW``'s ``p <- p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)``:
    here ``eps`` is added to the UNcorrected ``sqrt(v)`` (``eps / sqrt(1 - b2^t)`` in
    torch's terms: 10x at step 1 with ``b2 = 0.999``), and the decay scales the updated
    weight. ``correct_bias=False`` drops the bias correction (BERT's TF optimizer).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
    ) -> None:
        if lr < 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid AdamW settings lr={lr}, betas={betas}, eps={eps}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "correct_bias": correct_bias,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    step_size *= math.sqrt(1.0 - beta2 ** state["step"]) / (
                        1.0 - beta1 ** state["step"]
                    )
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


def param_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Trainable parameters only, biases and norms without weight decay.

    Returns AdamW groups with ``lr`` and ``weight_decay`` set: the run's (``lr``,
    ``weight_decay``), then one pair (decayed, not decayed) per submodule's
    ``GroupSettings`` (with ``decay_biases`` its biases and norms are in the decayed
    group). Empty groups are left out.
    """
    settings = [
        s for m in module.modules() if hasattr(m, "optimizer_group") if (s := m.optimizer_group())
    ]
    rates = [(lr, weight_decay)] + [
        (lr if s.lr is None else s.lr, weight_decay if s.weight_decay is None else s.weight_decay)
        for s in settings
    ]
    decay_all = [False] + [s.decay_biases for s in settings]
    owner = {id(p): i for i, s in enumerate(settings, start=1) for p in s.params}
    buckets: list[tuple[list, list]] = [([], []) for _ in rates]
    for name, p in module.named_parameters():
        if p.requires_grad:
            index = owner.get(id(p), 0)
            decay, no_decay = buckets[index]
            exempt = name.endswith(NO_DECAY) and not decay_all[index]
            (no_decay if exempt else decay).append(p)
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


class StepSchedule(LambdaLR):
    """A per-step ``LambdaLR`` whose optimizer follows the schedule after a restore too.

    Restoring a checkpoint loads the optimizer's saved learning rates, then the
    scheduler's position; ``load_state_dict`` then sets every group's learning rate to
    this schedule's value at that position. A schedule that differs from the saved one
    (MoLE's retrain phase, a resumed run with a longer ``trainer.max_steps``) so starts at
    its own value instead of the optimizer's last one.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        lambdas = zip(self.base_lrs, self.lr_lambdas, strict=True)
        rates = [base * f(self.last_epoch) for base, f in lambdas]
        for group, lr in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = lr
        self._last_lr = rates


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
            ``warmup_ratio`` (or ``warmup_steps``), ``betas``, ``eps``, ``adamw``
            (``torch``: ``torch.optim.AdamW``, the default; ``transformers_legacy``:
            ``LegacyAdamW``, the MoLEx authors').
        total_steps: the run's optimizer steps (``trainer.estimated_stepping_batches``).
        schedule_start: the global step at which this optimizer starts (after a prune).
        fresh_schedule: warm up and decay anew over the steps left after
            ``schedule_start``; otherwise the run's schedule goes on from there.
    """
    kind = optim.get("adamw") or "torch"
    if kind not in ADAMW_KINDS:
        raise ConfigError(f"optim.adamw={kind!r}; valid: {', '.join(ADAMW_KINDS)}")
    optimizer = (AdamW if kind == "torch" else LegacyAdamW)(
        param_groups(module, optim["lr"], optim["weight_decay"]),
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

    scheduler = StepSchedule(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
