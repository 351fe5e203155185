"""The 1cycle policy.

Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large
Learning Rates", arXiv 1708.07120; Smith, "A disciplined approach to neural network
hyper-parameters: Part 1", arXiv 1803.09820. One cycle from ``base_lr`` up to ``max_lr``
and down far below ``base_lr``, with momentum cycled inversely. The schedule is torch's
own :class:`~torch.optim.lr_scheduler.OneCycleLR`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR

from lightning_clr.schedules.base import Schedule, check_momentum_range, uses_momentum
from lightning_clr.schedules.checks import check_same_ratio, fail, need_total, require


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
        require(self, "pct_start", lambda v: 0 < v < 1, "in (0, 1)",
                "it is the fraction of steps spent warming up, 0.3 is common")
        if self.three_phase and self.pct_start >= 0.5:
            fail(
                f"OneCycle: pct_start must be < 0.5 with three_phase=True, got {self.pct_start!r}; "
                f"the rise and the symmetric fall must fit in the run"
            )
        require(self, "anneal_strategy", lambda v: v in ("cos", "linear"), "'cos' or 'linear'",
                kind=lambda v: isinstance(v, str))
        require(self, "final_div_factor", lambda v: v >= 1, ">= 1",
                "the final LR is base_lr / final_div_factor, 1e4 is common")
        check_momentum_range(self)

    @property
    def needs_total_steps(self) -> bool:
        return True

    def shape(self, steps_per_epoch: int, total_steps: int | None) -> dict[str, Any]:
        total = need_total(self, total_steps)
        if self.pct_start * total <= 1:
            fail(
                f"OneCycle: pct_start={self.pct_start} x total_steps={total} leaves no "
                f"warm-up phase; raise pct_start or train for more steps"
            )
        return {"total_steps": total, "pct_start": float(self.pct_start), "anneal_strategy": self.anneal_strategy,
                "final_div_factor": float(self.final_div_factor), "three_phase": bool(self.three_phase)}

    def check_bounds(self, lows: list[float], highs: list[float]) -> None:
        check_same_ratio(self, lows, highs, "torch's div_factor")

    def cycles_momentum(self, optimizer: Optimizer) -> bool:
        return uses_momentum(optimizer)

    def torch_scheduler(
        self, optimizer: Optimizer, lows: list[float], highs: list[float], shape: dict[str, Any], cycle_momentum: bool
    ) -> OneCycleLR:
        return OneCycleLR(optimizer, max_lr=highs, div_factor=highs[0] / lows[0], cycle_momentum=cycle_momentum,
                          base_momentum=self.base_momentum, max_momentum=self.max_momentum, **shape)
