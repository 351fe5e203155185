"""What a range test measured and chose, and the error it raises when it cannot read a curve."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class RangeTestError(RuntimeError):
    """The range test could not produce a usable curve (e.g. NaN loss at the first step)."""


@dataclass(frozen=True)
class RangeTestResult:
    """What the range test measured and chose: a record, fixed once the range test ends.

    Attributes:
        lrs: the LR of the first param group at each recorded step.
        losses: the bias-corrected smoothed loss at each step (mean over processes).
        raw_losses: the unsmoothed loss at each step.
        base_lr: the selected lower bound (first param group).
        max_lr: the selected upper bound (first param group).
        rule: the selection rule that chose the bounds (``"explicit"`` for given bounds).
        stop_reason: why the sweep ended: ``"completed"``, ``"diverged"``,
            ``"non-finite loss"``, ``"too many skipped steps"``, or ``"explicit bounds"``
            when no sweep ran (a ``fast_dev_run`` makes no result: ``finder.result`` stays ``None``).
        fallback: ``None`` if the rule read the bounds off the curve, else why a
            documented fallback was used.
        group_ratios: each param group's LR divided by the first group's when the range test
            ran; the schedule starts with these ratios. Groups added later (``BackboneFinetuning``)
            or LRs changed by other callbacks (``StochasticWeightAveraging``) are followed by the
            callback and leave this record as it is.
        skipped_steps: sweep steps not recorded: the gradient scaler skipped the update
            (inf/NaN gradients, e.g. with ``precision="16-mixed"``) or ``training_step``
            returned ``None``. The same LR is tried again on the next batch.
        extended: how many times the sweep was continued past its planned end because the loss
            was still falling at its last LR; only at ``end_lr=None``, the default end (100). 0 when
            the sweep found the top of the range, or ``end_lr`` was given (100 included): that is a
            ceiling.
        reruns: how many times the sweep was run again with twice the steps because its loss
            fell by less than ``min_fall``; the curve is the last run's.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    base_lr: float
    max_lr: float
    rule: str
    stop_reason: str
    fallback: str | None = None
    group_ratios: list[float] = field(default_factory=lambda: [1.0])
    skipped_steps: int = 0
    extended: int = 0
    reruns: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers and strings only, so a checkpoint loads with ``torch.load(weights_only=True)``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RangeTestResult:
        """The inverse of :meth:`to_dict`."""
        return cls(**state)
