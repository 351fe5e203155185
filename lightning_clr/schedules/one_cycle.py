"""The 1cycle policy.

Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large
Learning Rates", arXiv 1708.07120; Smith, "A disciplined approach to neural network
hyper-parameters: Part 1", arXiv 1803.09820. One cycle from ``base_lr`` up to ``max_lr``
and down far below ``base_lr``, with momentum cycled inversely. The schedule is torch's
own :class:`~torch.optim.lr_scheduler.OneCycleLR`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR

from lightning_clr.schedules.base import (
    Bound,
    Schedule,
    check_momentum_range,
    check_steps,
    fail,
    is_number,
    reset_lrs,
    resolve_bounds,
    uses_momentum,
)

_RATIO_RTOL = 1e-9


@dataclass
class OneCycle(Schedule):
    """1cycle: warm up from ``base_lr`` to ``max_lr``, then anneal to ``base_lr / final_div_factor``.

    Momentum is cycled inversely between ``max_momentum`` and ``base_momentum`` when the
    optimizer uses momentum (``betas``, or ``momentum`` > 0); otherwise it is left alone.
    All param groups must share one ``max_lr / base_lr`` ratio (torch's ``div_factor``).
    Needs ``total_steps``.

    Args:
        pct_start: Fraction of the run spent raising the LR, in (0, 1).
        anneal_strategy: ``"cos"`` or ``"linear"``.
        final_div_factor: The final LR is ``base_lr / final_div_factor`` (>= 1).
        three_phase: Come back down to ``base_lr`` symmetrically, then anneal to the final
            LR in a third phase (Smith 2018); needs ``pct_start < 0.5``.
        base_momentum: Momentum at the LR peak.
        max_momentum: Momentum at the start and end.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.OneCycle(pct_start=0.3))
    """

    pct_start: float = 0.4  # benchmarks/suite.py: 0.4 chosen in 9 of 9 folds over 0.25
    anneal_strategy: str = "cos"
    final_div_factor: float = 1e4
    three_phase: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def __post_init__(self) -> None:
        if not is_number(self.pct_start) or not 0 < self.pct_start < 1:
            fail(
                f"OneCycle: pct_start must be in (0, 1), got {self.pct_start!r}; "
                f"it is the fraction of steps spent warming up, 0.3 is common"
            )
        if self.three_phase and self.pct_start >= 0.5:
            fail(
                f"OneCycle: pct_start must be < 0.5 with three_phase=True, got {self.pct_start!r}; "
                f"the rise and the symmetric fall must fit in the run"
            )
        if self.anneal_strategy not in ("cos", "linear"):
            fail(
                f"OneCycle: anneal_strategy must be 'cos' or 'linear', "
                f"got {self.anneal_strategy!r}"
            )
        if not is_number(self.final_div_factor) or self.final_div_factor < 1:
            fail(
                f"OneCycle: final_div_factor must be >= 1, got {self.final_div_factor!r}; "
                f"the final LR is base_lr / final_div_factor, 1e4 is common"
            )
        check_momentum_range(self, self.base_momentum, self.max_momentum)

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
    ) -> OneCycleLR:
        check_steps(self, steps_per_epoch, total_steps, need_total=True)
        assert total_steps is not None
        lows, highs = resolve_bounds(self, optimizer, base_lr, max_lr)
        ratios = [hi / lo for lo, hi in zip(lows, highs)]
        if max(ratios) > min(ratios) * (1 + _RATIO_RTOL):
            fail(
                f"OneCycle: every param group needs the same max_lr/base_lr ratio (torch's "
                f"div_factor), got {ratios}; pass base_lr values proportional to max_lr"
            )
        if self.pct_start * total_steps <= 1:
            fail(
                f"OneCycle: pct_start={self.pct_start} x total_steps={total_steps} leaves no "
                f"warm-up phase; raise pct_start or train for more steps"
            )
        reset_lrs(optimizer, lows)
        return OneCycleLR(
            optimizer,
            max_lr=highs,
            total_steps=int(total_steps),
            pct_start=float(self.pct_start),
            anneal_strategy=self.anneal_strategy,  # type: ignore[arg-type]
            cycle_momentum=uses_momentum(optimizer),
            base_momentum=self.base_momentum,
            max_momentum=self.max_momentum,
            div_factor=ratios[0],
            final_div_factor=self.final_div_factor,
            three_phase=self.three_phase,
        )
