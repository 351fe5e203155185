"""The fixed-LR baseline and the classic annealings that CLR is compared against.

Smith, "Cyclical Learning Rates for Training Neural Networks", arXiv 1506.01186, compares
CLR with a fixed LR and with step, exponential and (Loshchilov & Hutter, arXiv 1608.03983)
cosine annealing. Each annealing runs from ``max_lr`` down toward ``base_lr``. Every
schedule here is a pure function of the step count; the numbers equal torch's
``ConstantLR``, ``StepLR``, ``ExponentialLR`` and ``CosineAnnealingLR`` (tests compare every
step), with one ``base_lr`` per param group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lightning_clr.schedules.base import Schedule
from lightning_clr.schedules.checks import (
    check_same_ratio,
    epochs_to_steps,
    fail,
    given_as,
    is_count,
    need_total,
    require,
)


def constant_lr(step: int, base_lr: float, max_lr: float, position: float) -> float:
    """``base_lr * (max_lr / base_lr) ** position`` at every step: 0 is ``base_lr``, 1 is ``max_lr``."""
    assert 0 <= position <= 1
    return base_lr * (max_lr / base_lr) ** position


@dataclass
class Constant(Schedule):
    """Constant LR at ``base_lr * (max_lr / base_lr) ** position``, per param group.

    ``position`` 0 is ``base_lr``, 1 is ``max_lr`` and 0.5 their geometric mean.

    Args:
        position: Where between the bounds to sit, on a log scale, in [0, 1].

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.Constant(position=0.5))
    """

    lr_at = staticmethod(constant_lr)

    position: float = 0.5

    def __post_init__(self) -> None:
        require(self, "position", lambda v: 0 <= v <= 1, "in [0, 1]",
                "0 is base_lr, 1 is max_lr, 0.5 their geometric mean")

    def shape(self, steps_per_epoch: int, total_steps: int | None) -> dict[str, Any]:
        return {"position": float(self.position)}


def step_decay_lr(
    step: int, base_lr: float, max_lr: float, step_size: int, gamma: float | None = None, drops: int | None = None
) -> float:
    """Step decay: ``max_lr`` times ``gamma`` for every ``step_size`` steps completed (1: exponential decay).

    Args:
        step: Step count, 0 for the first training step.
        base_lr: Where the ``drops``-th drop lands when ``gamma`` is None.
        max_lr: The LR before the first drop.
        step_size: Steps between drops.
        gamma: Factor per drop; None takes ``(base_lr / max_lr) ** (1 / drops)``.
        drops: The drops the run sees, used when ``gamma`` is None.
    """
    # 1) drops taken so far
    k = step // step_size
    # 2) the factor per drop, given or derived so that drop number `drops` lands on base_lr
    if gamma is None:
        assert drops is not None and drops >= 1
        return max_lr * (base_lr / max_lr) ** (k / drops)
    return max_lr * gamma**k


@dataclass
class StepDecay(Schedule):
    """Step decay: start at ``max_lr`` and multiply by ``gamma`` every ``step_size`` steps.

    When ``gamma`` is None it is derived so that the last drop taking effect within
    ``total_steps`` lands exactly on ``base_lr`` (and ``total_steps`` is then needed).
    The numbers of torch's :class:`~torch.optim.lr_scheduler.StepLR`.

    Args:
        step_epochs: Epochs between drops, used when ``step_size`` is None.
        step_size: Optimizer steps between drops; overrides ``step_epochs``.
        gamma: Factor per drop in (0, 1]; None derives it from the bounds.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.StepDecay(step_epochs=5))
    """

    lr_at = staticmethod(step_decay_lr)

    step_epochs: float = 5.0
    step_size: int | None = None
    gamma: float | None = None

    def __post_init__(self) -> None:
        require(self, "step_epochs", lambda v: v > 0, "> 0", "use e.g. 5")
        require(self, "step_size", lambda v: v >= 1, "an integer >= 1", "use None to derive it from step_epochs",
                optional=True, kind=is_count)
        require(self, "gamma", lambda v: 0 < v <= 1, "in (0, 1]", "use None to reach base_lr at the end of the run",
                optional=True)

    @property
    def needs_total_steps(self) -> bool:
        return self.gamma is None

    @property
    def needs_epoch_length(self) -> bool:
        return self.step_size is None

    def shape(self, steps_per_epoch: int, total_steps: int | None) -> dict[str, Any]:
        if self.gamma is None:
            need_total(self, total_steps)
        step_size = self.step_size or epochs_to_steps(self.step_epochs, steps_per_epoch)
        if total_steps is not None and step_size >= total_steps:
            fail(f"StepDecay: {given_as(self, 'step_size', 'step_epochs')} spans the whole run ({total_steps} "
                 "optimizer steps), so the LR never decays; lower it or raise trainer.max_epochs")
        drops = None if total_steps is None else (total_steps - 1) // step_size  # drops a training step sees
        return {"step_size": step_size, "gamma": self.gamma, "drops": drops}

    def check_bounds(self, lows: list[float], highs: list[float]) -> None:
        if self.gamma is None:
            check_same_ratio(self, lows, highs, "a derived gamma (set gamma explicitly otherwise)")


@dataclass
class ExponentialDecay(Schedule):
    """Exponential decay: start at ``max_lr`` and multiply by ``gamma`` every step.

    When ``gamma`` is None it is ``(base_lr / max_lr) ** (1 / total_steps)``, reaching
    ``base_lr`` at the end of the run. The numbers of torch's
    :class:`~torch.optim.lr_scheduler.ExponentialLR`.

    Args:
        gamma: Factor per optimizer step in (0, 1]; None derives it from the bounds.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.ExponentialDecay())
    """

    lr_at = staticmethod(step_decay_lr)  # a drop at every step

    gamma: float | None = None

    def __post_init__(self) -> None:
        require(self, "gamma", lambda v: 0 < v <= 1, "in (0, 1]",
                "it applies per optimizer step, so use None to reach base_lr at the end of the run", optional=True)

    @property
    def needs_total_steps(self) -> bool:
        return self.gamma is None

    def shape(self, steps_per_epoch: int, total_steps: int | None) -> dict[str, Any]:
        drops = need_total(self, total_steps) if self.gamma is None else None
        return {"step_size": 1, "gamma": self.gamma, "drops": drops}

    def check_bounds(self, lows: list[float], highs: list[float]) -> None:
        if self.gamma is None:
            check_same_ratio(self, lows, highs, "a derived gamma (set gamma explicitly otherwise)")


def cosine_lr(step: int, base_lr: float, max_lr: float, total_steps: int) -> float:
    """Cosine annealing from ``max_lr`` at step 0 to ``base_lr`` at ``total_steps``, then flat."""
    # 1) progress through the run, held at the end once it is over
    ratio = min(step, total_steps) / total_steps
    assert 0 <= ratio <= 1
    # 2) half a cosine from max_lr down to base_lr
    return base_lr + 0.5 * (max_lr - base_lr) * (1.0 + math.cos(math.pi * ratio))


@dataclass
class Cosine(Schedule):
    """Cosine annealing from ``max_lr`` to ``base_lr`` over the whole run, without restarts.

    The same LRs as torch's ``CosineAnnealingLR(T_max=total_steps, eta_min=base_lr)``,
    with one ``eta_min`` per param group, so group LR ratios hold exactly. Needs ``total_steps``.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.Cosine())
    """

    lr_at = staticmethod(cosine_lr)

    @property
    def needs_total_steps(self) -> bool:
        return True

    def shape(self, steps_per_epoch: int, total_steps: int | None) -> dict[str, Any]:
        return {"total_steps": need_total(self, total_steps)}
