"""Cyclical learning rates: triangular, triangular2 and exp_range.

Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, arXiv 1506.01186.
The LR rises linearly from ``base_lr`` to ``max_lr`` over ``step_size`` optimizer steps
and falls back over as many; the paper recommends a half cycle of 2-10 epochs.
The schedules are torch's own :class:`~torch.optim.lr_scheduler.CyclicLR`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CyclicLR

from lightning_clr.schedules.base import Schedule, check_momentum_range
from lightning_clr.schedules.checks import epochs_to_steps, fail, is_count, require


@dataclass
class _Cyclic(Schedule):
    """Fields shared by the three CLR policies, which are torch's own ``CyclicLR``.

    The half cycle is ``step_size`` steps if set, else ``step_epochs`` epochs if set, else
    fitted to the run: ``total_steps / (2 * num_cycles)``, so the run ends exactly at the
    end of its last cycle, at ``base_lr``. The arguments are documented on :class:`Triangular`.
    """

    mode: ClassVar[str]

    step_epochs: float | None = None
    step_size: int | None = None
    num_cycles: int = 1  # benchmarks/suite.py: median regret over families 0.05 (1 cycle) against 0.56 (2 cycles)
    cycle_momentum: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def __post_init__(self) -> None:
        require(self, "step_epochs", lambda v: v > 0, "> 0", "Smith recommends 2-10 epochs per half cycle",
                optional=True)
        require(self, "num_cycles", lambda v: v >= 1, "an integer >= 1", "1 (the default) is one full cycle per run",
                kind=is_count)
        require(self, "step_size", lambda v: v >= 1, "an integer >= 1", "use None to derive it from step_epochs",
                optional=True, kind=is_count)
        if self.cycle_momentum:
            check_momentum_range(self)

    @property
    def needs_total_steps(self) -> bool:
        return self.step_size is None and self.step_epochs is None

    @property
    def needs_epoch_length(self) -> bool:
        return self.step_size is None and self.step_epochs is not None

    def half_cycle(self, steps_per_epoch: int, total_steps: int | None) -> int:
        """Half-cycle length in optimizer steps."""
        if self.step_size is not None:
            return self.step_size
        if self.step_epochs is not None:
            return epochs_to_steps(self.step_epochs, steps_per_epoch)
        if total_steps is None:
            fail(
                f"{type(self).__name__}: without step_size or step_epochs the half cycle is "
                f"total_steps / (2 * num_cycles), and the run has no end; set max_epochs or "
                f"max_steps on the Trainer, or give step_epochs"
            )
        return max(1, round(total_steps / (2 * self.num_cycles)))

    def _gamma(self, step_size: int) -> float:
        return 1.0

    def shape(self, steps_per_epoch: int, total_steps: int | None) -> dict[str, Any]:
        step_size = self.half_cycle(steps_per_epoch, total_steps)
        return {"step_size_up": step_size, "mode": self.mode, "gamma": self._gamma(step_size)}

    def cycles_momentum(self, optimizer: Optimizer) -> bool:
        return self.cycle_momentum

    def torch_scheduler(
        self, optimizer: Optimizer, lows: list[float], highs: list[float], shape: dict[str, Any], cycle_momentum: bool
    ) -> CyclicLR:
        return CyclicLR(optimizer, base_lr=lows, max_lr=highs, cycle_momentum=cycle_momentum,
                        base_momentum=self.base_momentum, max_momentum=self.max_momentum, **shape)

    def cycle_ends(self, *, steps_per_epoch: int, total_steps: int) -> list[int]:
        """Ends of the full cycles, ``2*step_size, 4*step_size, ...`` up to ``total_steps``."""
        self.check(steps_per_epoch=steps_per_epoch, total_steps=total_steps)
        cycle = 2 * self.half_cycle(steps_per_epoch, total_steps)
        return list(range(cycle, total_steps + 1, cycle))


@dataclass
class Triangular(_Cyclic):
    """Triangular CLR: a constant-amplitude triangle wave between the bounds (Smith 2017).

    Args:
        step_epochs: Half-cycle length in epochs (Smith: 2-10), used when ``step_size`` is None.
        step_size: Half-cycle length in optimizer steps; overrides ``step_epochs``.
        num_cycles: Full cycles in the run, used when both lengths above are None.
        cycle_momentum: Cycle momentum inversely to the LR. Off by default, as in Smith's
            CLR; torch's default would overwrite the optimizer's momentum.
        base_momentum: Momentum at the LR peak when ``cycle_momentum`` is on.
        max_momentum: Momentum at the LR trough when ``cycle_momentum`` is on.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.Triangular(step_epochs=4))
    """

    mode: ClassVar[str] = "triangular"


@dataclass
class Triangular2(_Cyclic):
    """Triangular CLR whose amplitude halves after every full cycle (Smith 2017).

    Args: those of :class:`Triangular`.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.Triangular2(step_epochs=4))
    """

    mode: ClassVar[str] = "triangular2"


@dataclass
class ExpRange(_Cyclic):
    """Triangular CLR whose amplitude decays exponentially with the step count (Smith 2017).

    torch's ``exp_range`` scales the amplitude by ``gamma ** iteration``, counted over all
    steps, so a hand-picked ``gamma`` is easily orders of magnitude off. By default
    ``gamma`` is derived from ``cycle_decay``, the amplitude factor per full cycle.

    Args:
        gamma: torch's per-step amplitude factor in (0, 1]; overrides ``cycle_decay``.
        cycle_decay: Amplitude factor per full cycle in (0, 1], giving
            ``gamma = cycle_decay ** (1 / (2 * step_size))``.

    The other arguments are those of :class:`Triangular`.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.ExpRange(step_epochs=4, cycle_decay=0.5))
    """

    mode: ClassVar[str] = "exp_range"

    gamma: float | None = None
    cycle_decay: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "gamma", lambda v: 0 < v <= 1, "in (0, 1]",
                "it scales the amplitude per optimizer step, so use None to derive it from cycle_decay", optional=True)
        require(self, "cycle_decay", lambda v: 0 < v <= 1, "in (0, 1]",
                "use 0.5 to halve the amplitude every cycle or 1 for no decay")

    def _gamma(self, step_size: int) -> float:
        if self.gamma is not None:
            return self.gamma
        return self.cycle_decay ** (1.0 / (2 * step_size))
