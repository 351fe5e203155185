"""The fixed-LR baseline and the classic annealings that CLR is compared against.

Smith, "Cyclical Learning Rates for Training Neural Networks", arXiv 1506.01186, compares
CLR with a fixed LR and with step, exponential and (Loshchilov & Hutter, arXiv 1608.03983)
cosine annealing. Each annealing runs from ``max_lr`` down toward ``base_lr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, ExponentialLR, StepLR

from lightning_clr.schedules.base import (
    Bound,
    ClosedFormLR,
    Schedule,
    check_steps,
    epochs_to_steps,
    fail,
    is_count,
    is_number,
    reset_lrs,
    resolve_bounds,
)


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

    position: float = 0.5

    def __post_init__(self) -> None:
        if not is_number(self.position) or not 0 <= self.position <= 1:
            fail(
                f"Constant: position must be in [0, 1], got {self.position!r}; "
                f"0 is base_lr, 1 is max_lr, 0.5 their geometric mean"
            )

    def build(
        self,
        optimizer: Optimizer,
        base_lr: Bound,
        max_lr: Bound,
        *,
        steps_per_epoch: int,
        total_steps: int | None,
    ) -> ConstantLR:
        check_steps(self, steps_per_epoch, total_steps)
        lows, highs = resolve_bounds(self, optimizer, base_lr, max_lr)
        reset_lrs(optimizer, [lo * (hi / lo) ** self.position for lo, hi in zip(lows, highs)])
        return ConstantLR(optimizer, factor=1.0, total_iters=0)


@dataclass
class StepDecay(Schedule):
    """Step decay: start at ``max_lr`` and multiply by ``gamma`` every ``step_size`` steps.

    When ``gamma`` is None it is derived so that the last drop taking effect within
    ``total_steps`` lands exactly on ``base_lr`` (and ``total_steps`` is then needed).
    torch's :class:`~torch.optim.lr_scheduler.StepLR`.

    Args:
        step_epochs: Epochs between drops, used when ``step_size`` is None.
        step_size: Optimizer steps between drops; overrides ``step_epochs``.
        gamma: Factor per drop in (0, 1]; None derives it from the bounds.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.StepDecay(step_epochs=5))
    """

    step_epochs: float = 5.0
    step_size: int | None = None
    gamma: float | None = None

    def __post_init__(self) -> None:
        if not is_number(self.step_epochs) or self.step_epochs <= 0:
            fail(f"StepDecay: step_epochs must be > 0, got {self.step_epochs!r}; use e.g. 5")
        if self.step_size is not None and (not is_count(self.step_size) or self.step_size < 1):
            fail(
                f"StepDecay: step_size must be an integer >= 1 or None, got {self.step_size!r}; "
                f"use None to derive it from step_epochs"
            )
        if self.gamma is not None and (not is_number(self.gamma) or not 0 < self.gamma <= 1):
            fail(
                f"StepDecay: gamma must be in (0, 1] or None, got {self.gamma!r}; "
                f"use None to reach base_lr at the end of the run"
            )

    @property
    def needs_total_steps(self) -> bool:
        return self.gamma is None

    @property
    def needs_epoch_length(self) -> bool:
        return self.step_size is None

    def check(self, *, steps_per_epoch: int, total_steps: int | None) -> None:
        super().check(steps_per_epoch=steps_per_epoch, total_steps=total_steps)
        step_size = self.step_size or epochs_to_steps(self.step_epochs, steps_per_epoch)
        if total_steps is not None and step_size >= total_steps:
            given = (f"step_size={self.step_size} (schedule.step_size)" if self.step_size is not None
                     else f"step_epochs={self.step_epochs:g} (schedule.step_epochs)")
            fail(f"StepDecay: {given} spans the whole run ({total_steps} optimizer steps), so the LR never "
                 "decays; lower it or raise trainer.max_epochs")

    def build(
        self,
        optimizer: Optimizer,
        base_lr: Bound,
        max_lr: Bound,
        *,
        steps_per_epoch: int,
        total_steps: int | None,
    ) -> StepLR:
        check_steps(self, steps_per_epoch, total_steps, need_total=self.needs_total_steps)
        lows, highs = resolve_bounds(self, optimizer, base_lr, max_lr)
        step_size = self.step_size or epochs_to_steps(self.step_epochs, steps_per_epoch)
        gamma = self.gamma
        if gamma is None:
            assert total_steps is not None
            drops = (total_steps - 1) // step_size  # drops that a training step sees
            gamma = (lows[0] / highs[0]) ** (1.0 / drops) if drops > 0 else 1.0
            _check_same_ratio(self, lows, highs)
        reset_lrs(optimizer, highs)
        return StepLR(optimizer, step_size=step_size, gamma=gamma)


@dataclass
class ExponentialDecay(Schedule):
    """Exponential decay: start at ``max_lr`` and multiply by ``gamma`` every step.

    When ``gamma`` is None it is ``(base_lr / max_lr) ** (1 / total_steps)``, reaching
    ``base_lr`` at the end of the run. torch's :class:`~torch.optim.lr_scheduler.ExponentialLR`.

    Args:
        gamma: Factor per optimizer step in (0, 1]; None derives it from the bounds.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.ExponentialDecay())
    """

    gamma: float | None = None

    def __post_init__(self) -> None:
        if self.gamma is not None and (not is_number(self.gamma) or not 0 < self.gamma <= 1):
            fail(
                f"ExponentialDecay: gamma must be in (0, 1] or None, got {self.gamma!r}; it "
                f"applies per optimizer step, so use None to reach base_lr at the end of the run"
            )

    @property
    def needs_total_steps(self) -> bool:
        return self.gamma is None

    def build(
        self,
        optimizer: Optimizer,
        base_lr: Bound,
        max_lr: Bound,
        *,
        steps_per_epoch: int,
        total_steps: int | None,
    ) -> ExponentialLR:
        check_steps(self, steps_per_epoch, total_steps, need_total=self.needs_total_steps)
        lows, highs = resolve_bounds(self, optimizer, base_lr, max_lr)
        gamma = self.gamma
        if gamma is None:
            assert total_steps is not None
            gamma = (lows[0] / highs[0]) ** (1.0 / total_steps)
            _check_same_ratio(self, lows, highs)
        reset_lrs(optimizer, highs)
        return ExponentialLR(optimizer, gamma=gamma)


def _check_same_ratio(spec: Schedule, lows: list[float], highs: list[float]) -> None:
    """A derived decay factor is shared by all groups, so their ratios must agree."""
    ratios = [hi / lo for lo, hi in zip(lows, highs)]
    if max(ratios) > min(ratios) * (1 + 1e-9):
        fail(
            f"{type(spec).__name__}: a derived gamma needs the same max_lr/base_lr ratio in every "
            f"param group, got {ratios}; pass proportional bounds or set gamma explicitly"
        )


def cosine_lr(step: int, base_lr: float, max_lr: float, total_steps: int) -> float:
    """Cosine annealing from ``max_lr`` at step 0 to ``base_lr`` at ``total_steps``, then flat."""
    # 1) progress through the run, held at the end once it is over
    ratio = min(step, total_steps) / total_steps
    assert 0 <= ratio <= 1
    # 2) half a cosine from max_lr down to base_lr
    return base_lr + 0.5 * (max_lr - base_lr) * (1.0 + math.cos(math.pi * ratio))


class CosineScheduler(ClosedFormLR):
    """``LRScheduler`` that follows :func:`cosine_lr` in every param group.

    Unlike torch's ``CosineAnnealingLR``, whose ``eta_min`` is one scalar, each group
    anneals to its own ``base_lr``, so group LR ratios hold exactly.

    Args:
        optimizer: Wrapped optimizer.
        min_lrs: ``base_lr`` per param group.
        max_lrs: ``max_lr`` per param group.
        total_steps: Steps from ``max_lr`` to ``base_lr``.
        last_epoch: Index of the last step taken; ``-1`` starts from the beginning.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        min_lrs: list[float],
        max_lrs: list[float],
        total_steps: int,
        last_epoch: int = -1,
    ) -> None:
        self.total_steps = int(total_steps)
        super().__init__(optimizer, min_lrs, max_lrs, last_epoch)

    def lr_at(self, step: int, min_lr: float, max_lr: float) -> float:
        return cosine_lr(step, min_lr, max_lr, self.total_steps)


@dataclass
class Cosine(Schedule):
    """Cosine annealing from ``max_lr`` to ``base_lr`` over the whole run, without restarts.

    The same LRs as torch's ``CosineAnnealingLR(T_max=total_steps, eta_min=base_lr)``,
    with one ``eta_min`` per param group. Needs ``total_steps``.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.Cosine())
    """

    @property
    def needs_total_steps(self) -> bool:
        return True

    def build(
        self,
        optimizer: Optimizer,
        base_lr: Bound,
        max_lr: Bound,
        *,
        steps_per_epoch: int,
        total_steps: int | None,
    ) -> CosineScheduler:
        check_steps(self, steps_per_epoch, total_steps, need_total=True)
        assert total_steps is not None
        lows, highs = resolve_bounds(self, optimizer, base_lr, max_lr)
        reset_lrs(optimizer, highs)
        return CosineScheduler(optimizer, lows, highs, total_steps=total_steps)
