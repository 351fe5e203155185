"""Warmup-stable-decay (WSD): a linear warm-up, a long plateau at the peak, a short final decay.

Hägele et al., "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations",
NeurIPS 2024, arXiv 2405.18392: a constant LR followed by a cooldown over the last 10-20% of
the run trains as well as a cosine schedule of the same length, and the cooldown shaped as
``1 - sqrt`` does better than a linear one. Here the plateau sits at the range test's
``max_lr`` and the decay ends at its ``base_lr``. The schedule is the pure function
:func:`wsd_lr` of the step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lightning_clr.schedules.base import Schedule
from lightning_clr.schedules.checks import fail, need_total, require

#: decay shapes: the fraction of ``max_lr - base_lr`` left at progress ``p`` through the decay
DECAY_SHAPES = {
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
    "1-sqrt": lambda p: 1.0 - math.sqrt(p),
}


def wsd_lr(step: int, base_lr: float, max_lr: float, total_steps: int, warmup: float = 0.05, decay: float = 0.2,
           decay_shape: str = "1-sqrt") -> float:
    """LR of WSD at ``step`` (the number of completed optimizer steps).

    The phases end at fractions of the run, not at rounded step counts, so a run of a few
    steps keeps the shape: the warm-up reaches ``max_lr`` at step ``warmup * total_steps``
    and the decay reaches ``base_lr`` at ``total_steps``, then stays there.

    Args:
        step: Step count, 0 for the first training step.
        base_lr: Start of the warm-up and end of the decay.
        max_lr: The plateau.
        total_steps: Optimizer steps of the run.
        warmup: Fraction of the run spent rising linearly from ``base_lr``, in ``[0, 1)``.
        decay: Fraction of the run, at its end, spent decaying to ``base_lr``, in ``(0, 1]``.
        decay_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.
    """
    assert 0 <= warmup and 0 < decay and warmup + decay <= 1
    t, warmup_end, decay_start = float(step), warmup * total_steps, (1.0 - decay) * total_steps
    # 1) linear warm-up from base_lr to max_lr
    if t < warmup_end:
        return base_lr + (max_lr - base_lr) * t / warmup_end
    # 2) the stable phase at max_lr
    if t < decay_start:
        return max_lr
    # 3) the decay to base_lr over the last `decay` of the run, held at base_lr once it is over
    ratio = min(t - decay_start, total_steps - decay_start) / (total_steps - decay_start)
    assert 0 <= ratio <= 1
    return base_lr + (max_lr - base_lr) * DECAY_SHAPES[decay_shape](ratio)


@dataclass
class WSD(Schedule):
    """Warmup-stable-decay (Hägele et al. 2024, arXiv 2405.18392) between the found bounds.

    A linear warm-up from ``base_lr`` to ``max_lr`` over the first ``warmup`` of the run, a
    plateau at ``max_lr``, and a decay to ``base_lr`` over the last ``decay`` of the run.
    Needs ``total_steps``.

    Args:
        warmup: Fraction of the run spent warming up, in ``[0, 1)``.
        decay: Fraction of the run spent decaying, in ``(0, 1]``; ``warmup + decay <= 1``.
        decay_shape: ``"1-sqrt"`` (the paper's best), ``"linear"`` or ``"cosine"``.

    Example::

        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.WSD(warmup=0.05, decay=0.2))
    """

    lr_at = staticmethod(wsd_lr)

    # benchmarks/suite.py (2026-12-06): warm-up 0.05 and decay 0.2 chosen leave-one-family-out over warm-ups
    # of 0.1 and 0.2 and decays of 0.1 and 0.4 in 13 of 14 folds, in the paper's 1-sqrt shape
    warmup: float = 0.05
    decay: float = 0.2
    decay_shape: str = "1-sqrt"

    def __post_init__(self) -> None:
        require(self, "warmup", lambda v: 0 <= v < 1, "in [0, 1) (a fraction of the run)", "use 0 for no warm-up")
        require(self, "decay", lambda v: 0 < v <= 1, "in (0, 1] (a fraction of the run)",
                "0.1-0.2 is the paper's range")
        if self.warmup + self.decay > 1:
            fail(f"WSD: warmup ({self.warmup}) + decay ({self.decay}) must be <= 1 (fractions of one run); "
                 "lower one of them")
        require(self, "decay_shape", lambda v: v in DECAY_SHAPES, " or ".join(map(repr, DECAY_SHAPES)),
                "1-sqrt is the paper's best", kind=lambda v: isinstance(v, str))

    @property
    def needs_total_steps(self) -> bool:
        return True

    def shape(self, steps_per_epoch: int, total_steps: int | None) -> dict[str, Any]:
        return {"total_steps": need_total(self, total_steps), "warmup": float(self.warmup),
                "decay": float(self.decay), "decay_shape": self.decay_shape}
