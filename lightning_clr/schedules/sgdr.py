"""SGDR: cosine annealing with warm restarts.

Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017,
arXiv 1608.03983. Each cycle anneals the LR by a cosine from its peak down to a floor
(``eta_min`` in the paper, which anneals to about zero) and then restarts; cycle ``i`` lasts
``T0 * cycle_mult**i`` steps.

torch's ``CosineAnnealingWarmRestarts`` accepts only an integer ``T_mult >= 1`` and has no
warmup or peak decay, so the schedule here is the pure function :func:`sgdr_lr` of the
step count, wrapped by the thin :class:`SGDRScheduler`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lightning_clr.schedules.base import Schedule
from lightning_clr.schedules.checks import check_steps, fail, given_as, is_count, require

_SNAP = 1e-9  # relative distance within which a float counts as the nearby integer


def _snap_ceil(x: float) -> int:
    """Smallest integer >= ``x``, with values within float noise of an integer taken as it."""
    nearest = round(x)
    if abs(x - nearest) <= _SNAP * max(1.0, abs(x)):
        return int(nearest)
    return math.ceil(x)


def restart_step(cycle: int, first_cycle: float, cycle_mult: float) -> int:
    """Step (counted after warmup) at which ``cycle`` starts: the first integer step at or
    after the continuous boundary ``T0 * (1 + m + ... + m**(cycle - 1))``."""
    if cycle_mult == 1.0:
        boundary = first_cycle * cycle
    else:
        boundary = first_cycle * (cycle_mult**cycle - 1.0) / (cycle_mult - 1.0)
    return _snap_ceil(boundary)


def shrinking_cycle_limit(first_cycle: float, cycle_mult: float) -> int | None:
    """Number of cycles at least one step long; ``None`` (unbounded) unless ``cycle_mult < 1``."""
    if cycle_mult >= 1.0:
        return None
    # T0 * m**i >= 1  <=>  i <= log(T0) / log(1 / m)
    last = math.log(first_cycle) / -math.log(cycle_mult)
    nearest = round(last)
    last_cycle = nearest if abs(last - nearest) <= _SNAP * max(1.0, last) else math.floor(last)
    return last_cycle + 1


def cycle_index(t: int, first_cycle: float, cycle_mult: float) -> int | None:
    """Index of the cycle holding step ``t`` (counted after warmup), or ``None`` once shrinking
    cycles (``cycle_mult < 1``) have run out."""
    n = shrinking_cycle_limit(first_cycle, cycle_mult)
    if n is not None and t >= restart_step(n, first_cycle, cycle_mult):
        return None
    # 1) closed form: t = T0 * (m**i - 1) / (m - 1)  =>  i = log(1 + t * (m - 1) / T0) / log(m)
    if cycle_mult == 1.0:
        i = int(t // first_cycle)
    else:
        arg = 1.0 + t * (cycle_mult - 1.0) / first_cycle
        i = int(math.log(arg) / math.log(cycle_mult)) if arg > 0 else 0
    if n is not None:
        i = min(i, n - 1)
    # 2) correct float error at boundaries against the integer restart steps
    while (n is None or i + 1 < n) and restart_step(i + 1, first_cycle, cycle_mult) <= t:
        i += 1
    while i > 0 and restart_step(i, first_cycle, cycle_mult) > t:
        i -= 1
    return i


def sgdr_lr(
    step: int,
    base_lr: float,
    max_lr: float,
    first_cycle: float,
    cycle_mult: float = 1.0,
    cycle_decay: float = 1.0,
    warmup: int = 0,
    floor: float | None = None,
    eta_min: float | None = None,
    restart_warmup: float = 0.0,
    restart_warmup_steps: int | None = None,
) -> float:
    """LR of SGDR at ``step`` (the number of completed optimizer steps).

    Args:
        step: Step count, 0 for the first training step.
        base_lr: Start of the warmup, and the floor when ``floor`` and ``eta_min`` are None.
        max_lr: Peak LR of the first cycle.
        first_cycle: Length ``T0`` of the first cycle in steps (>= 1, may be fractional).
        cycle_mult: Factor by which each cycle is longer than the previous one (> 0).
        cycle_decay: Factor by which each peak's height above the floor shrinks.
        warmup: Steps of linear warmup from ``base_lr`` to ``max_lr`` before the first cycle.
        floor: Bottom of every cycle as a fraction of ``max_lr``; ``None`` takes ``base_lr``.
        eta_min: Bottom of every cycle as an absolute LR in ``[0, max_lr]``; overrides ``floor``.
        restart_warmup: Fraction of every cycle after the first, in ``[0, 1)``, spent rising
            linearly from the floor to the cycle's peak before the cosine; 0 restarts at once.
        restart_warmup_steps: The same rise in optimizer steps, shorter than every cycle after
            the first; overrides ``restart_warmup``.
    """
    low = floor_of(base_lr, max_lr, floor, eta_min)
    # 1) linear warmup from base_lr to max_lr
    if step < warmup:
        return base_lr + (max_lr - base_lr) * step / warmup
    # 2) locate the cycle; restarts fall on the first integer step after each boundary
    t = step - warmup
    i = cycle_index(t, first_cycle, cycle_mult)
    if i is None:  # 3) shrinking cycles have run out: stay annealed
        return low
    start = restart_step(i, first_cycle, cycle_mult)
    end = restart_step(i + 1, first_cycle, cycle_mult)
    ratio = (t - start) / (end - start)
    assert 0 <= ratio <= 1
    peak = low + (max_lr - low) * cycle_decay**i
    # 4) after a restart, optionally rise linearly from the floor to this cycle's peak
    ramp = 0.0 if i == 0 else restart_warmup if restart_warmup_steps is None else restart_warmup_steps / (end - start)
    assert 0 <= ramp < 1
    if ratio < ramp:
        return low + (peak - low) * ratio / ramp
    # 5) cosine from this cycle's (decayed) peak down to the floor
    ratio = (ratio - ramp) / (1.0 - ramp)
    return low + 0.5 * (peak - low) * (1.0 + math.cos(math.pi * ratio))


def floor_of(base_lr: float, max_lr: float, floor: float | None, eta_min: float | None) -> float:
    """The LR at the bottom of a cycle: ``eta_min`` if set, else ``floor * max_lr``, else ``base_lr``."""
    if eta_min is not None:
        return eta_min
    return base_lr if floor is None else floor * max_lr


def restarted_cycles(first_cycle: float, cycle_mult: float, span: int | None) -> list[int]:
    """Lengths in steps of the cycles after the first that start within ``span`` steps (after warmup).

    Without a span: with ``cycle_mult >= 1``, the length no later cycle is shorter than,
    ``floor(T0 * cycle_mult)``; with shrinking cycles, every cycle down to the last one.
    """
    n = shrinking_cycle_limit(first_cycle, cycle_mult)
    if span is None and n is None:
        return [math.floor(first_cycle * cycle_mult * (1 + _SNAP))]
    lengths, i = [], 1
    while (n is None or i < n) and (span is None or restart_step(i, first_cycle, cycle_mult) < span):
        lengths.append(restart_step(i + 1, first_cycle, cycle_mult) - restart_step(i, first_cycle, cycle_mult))
        i += 1
    return lengths


@dataclass
class SGDR(Schedule):
    """Cosine annealing from ``max_lr`` down to a floor, with warm restarts (arXiv 1608.03983).

    The floor (the paper's ``eta_min``) is ``eta_min`` if set, else ``floor * max_lr`` (per
    param group, so group ratios hold), else, with ``floor=None``, the range test's
    ``base_lr``. Cycle ``i`` lasts ``T0 * cycle_mult**i`` steps and peaks at
    ``floor + (max_lr - floor) * cycle_decay**i``. A restart falls on the first whole
    step at or after each cycle boundary, so fractional lengths never drift. With
    ``cycle_mult < 1`` the cycles shrink; once one would be shorter than a step, the LR
    stays at the floor.

    The first cycle lasts ``cycle_steps`` steps if set, else ``cycle_epochs`` epochs if set,
    else it is fitted to the run: ``num_cycles`` cycles (after warmup) end exactly at the
    last step, so the run finishes annealed.

    Args:
        cycle_epochs: Length of the first cycle in epochs, used when ``cycle_steps`` is None.
        cycle_steps: Length of the first cycle in optimizer steps; overrides ``cycle_epochs``.
        num_cycles: Cycles fitted to the run when both lengths above are None.
        cycle_mult: Length factor between consecutive cycles (> 0, may be fractional).
        cycle_decay: Peak-height factor between consecutive cycles, in (0, 1].
        warmup_epochs: Linear warmup from ``base_lr`` to ``max_lr`` before the first cycle.
        warmup_steps: Warmup in optimizer steps; overrides ``warmup_epochs``.
        floor: Bottom of every cycle as a fraction of ``max_lr``, in ``[0, 1)``; ``None``
            anneals to ``base_lr`` instead.
        eta_min: Bottom of every cycle as an absolute LR (the same in every param group),
            ``>= 0`` and at most ``max_lr``; overrides ``floor``.
        restart_warmup: Fraction of every cycle after the first, in ``[0, 1)``, in which the
            LR rises linearly from the floor to the cycle's peak instead of jumping there;
            0 is the published instantaneous restart.
        restart_warmup_steps: The same rise in optimizer steps (>= 0), shorter than every
            cycle after the first; overrides ``restart_warmup``.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.SGDR(cycle_epochs=1, cycle_mult=2, restart_warmup=0.1))
    """

    lr_at = staticmethod(sgdr_lr)

    cycle_epochs: float | None = None
    cycle_steps: int | None = None
    num_cycles: int = 2  # two cycles (1/3 + 2/3 of the run), measured on MNIST-1D in version 0.1
    cycle_mult: float = 2.0
    # measured (benchmarks/README.md, "SGDR floor"): restarting at full height from an annealed CNN diverged on
    # one MNIST-1D seed of six; halving each restart's height removed it. Across benchmarks/suite.py full-height
    # restarts score a little better (median-family regret +0.97 against +1.13); the safer 0.5 stays
    cycle_decay: float = 0.5
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None
    # annealing to base_lr: across benchmarks/suite.py +1.13 against +3.91 for floor=0 (the published schedule;
    # median-family regret); on MNIST-1D as good as 0.01 * max_lr (benchmarks/README.md, "SGDR floor")
    floor: float | None = None
    eta_min: float | None = None
    restart_warmup: float = 0.0  # a ramp of 0.05-0.1 rescued one diverging seed but cost 1-2 points on the others
    restart_warmup_steps: int | None = None

    def __post_init__(self) -> None:
        require(self, "cycle_epochs", lambda v: v > 0, "> 0", "1 is a common start", optional=True)
        require(self, "num_cycles", lambda v: v >= 1, "an integer >= 1", "2 fits two cycles in the run", kind=is_count)
        require(self, "cycle_steps", lambda v: v >= 1, "an integer >= 1", "use None to derive it from cycle_epochs",
                optional=True, kind=is_count)
        require(self, "cycle_mult", lambda v: v > 0, "> 0", "use 1 for equal-length cycles or 2 to double each cycle")
        require(self, "cycle_decay", lambda v: 0 < v <= 1, "in (0, 1]", "use 1 to restart at max_lr every cycle")
        require(self, "warmup_epochs", lambda v: v >= 0, ">= 0", "use 0 for no warmup")
        require(self, "warmup_steps", lambda v: v >= 0, "an integer >= 0", "use None to derive it from warmup_epochs",
                optional=True, kind=is_count)
        require(self, "floor", lambda v: 0 <= v < 1, "in [0, 1) (a fraction of max_lr)",
                "use 0 to anneal to zero as published, or None to anneal to base_lr", optional=True)
        require(self, "eta_min", lambda v: v >= 0, "an LR >= 0", "use None to take floor instead", optional=True)
        require(self, "restart_warmup", lambda v: 0 <= v < 1, "in [0, 1) (a fraction of each cycle)",
                "use 0 to restart at the peak at once")
        require(self, "restart_warmup_steps", lambda v: v >= 0, "an integer >= 0",
                "use None to take restart_warmup (a fraction of each cycle) instead", optional=True, kind=is_count)

    def first_cycle(self, steps_per_epoch: int, total_steps: int | None) -> float:
        """Length ``T0`` of the first cycle in optimizer steps (at least 1)."""
        if total_steps is not None and self.warmup(steps_per_epoch) >= total_steps:
            fail(f"SGDR: {given_as(self, 'warmup_steps', 'warmup_epochs')} covers the whole run ({total_steps} "
                 "optimizer steps), so no cycle would run; lower it or raise trainer.max_epochs")
        if self.cycle_steps is not None:
            return float(self.cycle_steps)
        if self.cycle_epochs is not None:
            t0 = self.cycle_epochs * steps_per_epoch
            source = f"cycle_epochs={self.cycle_epochs} x steps_per_epoch={steps_per_epoch}"
        elif total_steps is None:
            fail(
                "SGDR: without cycle_steps or cycle_epochs the cycles are fitted to the run, and "
                "the run has no end; set max_epochs or max_steps on the Trainer, or give cycle_epochs"
            )
        else:
            span = total_steps - self.warmup(steps_per_epoch)
            t0 = span / sum(self.cycle_mult**i for i in range(self.num_cycles))
            source = f"{span} steps after warmup / {self.num_cycles} cycles with cycle_mult={self.cycle_mult}"
        if t0 < 1:
            fail(f"SGDR: the first cycle is {t0:.3g} optimizer steps ({source}); it must be >= 1")
        return t0

    @property
    def needs_total_steps(self) -> bool:
        return self.cycle_steps is None and self.cycle_epochs is None

    @property
    def needs_epoch_length(self) -> bool:
        in_epochs = self.cycle_steps is None and self.cycle_epochs is not None
        return in_epochs or (self.warmup_steps is None and self.warmup_epochs > 0)

    def warmup(self, steps_per_epoch: int) -> int:
        """Warmup length in whole optimizer steps."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return round(self.warmup_epochs * steps_per_epoch)

    def shape(self, steps_per_epoch: int, total_steps: int | None) -> dict[str, Any]:
        t0, warmup = self.first_cycle(steps_per_epoch, total_steps), self.warmup(steps_per_epoch)
        ramp = self.restart_warmup_steps
        if ramp:
            span = None if total_steps is None else total_steps - warmup
            shortest = min(restarted_cycles(t0, self.cycle_mult, span), default=None)
            if shortest is not None and ramp >= shortest:
                fail(f"SGDR: restart_warmup_steps={ramp} does not fit in a restarted cycle of {shortest} optimizer "
                     "steps; lower it, or give restart_warmup (a fraction of each cycle) instead")
        return {"first_cycle": t0, "cycle_mult": float(self.cycle_mult), "cycle_decay": float(self.cycle_decay),
                "warmup": warmup, "floor": self.floor, "eta_min": self.eta_min,
                "restart_warmup": float(self.restart_warmup), "restart_warmup_steps": ramp}

    def check_bounds(self, lows: list[float], highs: list[float]) -> None:
        if self.eta_min is not None and self.eta_min > min(highs):
            fail(
                f"SGDR: eta_min ({self.eta_min}) must be <= max_lr ({min(highs)}); "
                f"lower eta_min or set it to None and use floor (a fraction of max_lr)"
            )

    def cycle_ends(self, *, steps_per_epoch: int, total_steps: int) -> list[int]:
        """Step counts at which each restart happens (a cycle has just ended), up to ``total_steps``."""
        check_steps(self, steps_per_epoch, total_steps)
        shape = self.shape(steps_per_epoch, total_steps)
        t0, warmup = shape["first_cycle"], shape["warmup"]
        n = shrinking_cycle_limit(t0, self.cycle_mult)
        ends: list[int] = []
        i = 1
        while n is None or i <= n:
            end = warmup + restart_step(i, t0, self.cycle_mult)
            if end > total_steps:
                break
            ends.append(end)
            i += 1
        return ends
