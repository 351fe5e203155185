"""Common base of the schedule specs and the helpers they share.

A schedule spec holds only the *shape* of a schedule. The learning-rate bounds come
from the range test and the step counts from the Trainer, so both are passed to
:meth:`Schedule.build`, which turns the spec into a ``torch.optim.lr_scheduler.LRScheduler``
stepped once per optimizer step.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

Bound = float | Sequence[float]


@dataclass
class Schedule(ABC):
    """Base class of every schedule spec.

    Subclasses are dataclasses of shape parameters, validated in ``__post_init__``.
    """

    @abstractmethod
    def build(
        self,
        optimizer: Optimizer,
        base_lr: Bound,
        max_lr: Bound,
        *,
        steps_per_epoch: int,
        total_steps: int | None,
    ) -> LRScheduler:
        """Create the scheduler for ``optimizer`` between ``base_lr`` and ``max_lr``.

        Args:
            optimizer: The optimizer whose param groups the scheduler drives.
            base_lr: Lower LR bound, a float for all param groups or one value per group.
            max_lr: Upper LR bound, a float or one value per group.
            steps_per_epoch: Optimizer steps per epoch (>= 1).
            total_steps: Optimizer steps of the whole run, or ``None`` when unknown.

        Returns:
            A scheduler to step once per optimizer step; right after construction the
            optimizer holds the LR of the first training step.

        Raises:
            ValueError: If the bounds or step counts are invalid for this schedule.
        """

    def cycle_ends(self, *, steps_per_epoch: int, total_steps: int) -> list[int]:
        """Step counts (completed optimizer steps) at which a cycle ends, up to ``total_steps``.

        Schedules without cycles end once, at ``total_steps``.
        """
        check_steps(self, steps_per_epoch, total_steps, need_total=True)
        return [total_steps]

    @property
    def needs_total_steps(self) -> bool:
        """Whether the shape depends on the length of the run (it is fitted to, or spans, the run)."""
        return False

    @property
    def needs_epoch_length(self) -> bool:
        """Whether a length is given in epochs, so the shape depends on the steps per epoch."""
        return False

    def check(self, *, steps_per_epoch: int, total_steps: int | None) -> None:
        """Raise now what :meth:`build` would raise for these step counts; needs no optimizer.

        Raises:
            ValueError: the run has no end but the schedule needs one, or the step counts
                give the schedule no valid shape (e.g. a first cycle shorter than one step).
        """
        if total_steps is None:
            check_steps(self, steps_per_epoch, None, need_total=self.needs_total_steps)
        else:
            self.cycle_ends(steps_per_epoch=steps_per_epoch, total_steps=total_steps)


def fail(message: str) -> None:
    """Raise ``ValueError(message)``; keeps validation blocks one line per rule."""
    raise ValueError(message)


def is_number(value: object) -> bool:
    """Whether ``value`` is a finite real number (bools excluded; NumPy scalars included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value: object) -> bool:
    """Whether ``value`` is an integer (bools excluded; NumPy integers included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def name_of(spec: object) -> str:
    """Class name of a spec, the prefix of its error messages."""
    return type(spec).__name__


def per_group(spec: object, name: str, value: Bound, optimizer: Optimizer) -> list[float]:
    """Expand ``value`` to one float per param group of ``optimizer``."""
    n_groups = len(optimizer.param_groups)
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if len(values) == 1:
        values = values * n_groups
    if len(values) != n_groups:
        fail(
            f"{name_of(spec)}: {name} has {len(values)} values but the optimizer has {n_groups} "
            f"param groups; pass one value per group or a single float"
        )
    for v in values:
        if not is_number(v):
            fail(f"{name_of(spec)}: {name} must be a finite number, got {v!r}")
    return [float(v) for v in values]


def resolve_bounds(
    spec: object, optimizer: Optimizer, base_lr: Bound, max_lr: Bound
) -> tuple[list[float], list[float]]:
    """Per-group ``(base_lrs, max_lrs)``, checked to satisfy ``0 < base_lr <= max_lr``."""
    lows = per_group(spec, "base_lr", base_lr, optimizer)
    highs = per_group(spec, "max_lr", max_lr, optimizer)
    for g, (lo, hi) in enumerate(zip(lows, highs)):
        where = f" in param group {g}" if len(lows) > 1 else ""
        if lo <= 0:
            fail(f"{name_of(spec)}: base_lr must be > 0, got {lo}{where}; use a positive LR")
        if hi < lo:
            fail(
                f"{name_of(spec)}: max_lr ({hi}) must be >= base_lr ({lo}){where}; "
                f"swap the two or lower base_lr"
            )
    return lows, highs


def check_steps(
    spec: object, steps_per_epoch: int, total_steps: int | None, *, need_total: bool = False
) -> None:
    """Validate the step counts passed to ``build`` / ``cycle_ends``."""
    if not is_count(steps_per_epoch) or steps_per_epoch < 1:
        fail(f"{name_of(spec)}: steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
    if total_steps is None:
        if need_total:
            fail(
                f"{name_of(spec)} needs total_steps, got None; "
                f"set max_epochs or max_steps on the Trainer"
            )
    elif not is_count(total_steps) or total_steps < 1:
        fail(f"{name_of(spec)}: total_steps must be an integer >= 1 or None, got {total_steps!r}")


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
    """``epochs`` converted to a whole number of optimizer steps, at least one."""
    return max(1, round(epochs * steps_per_epoch))


def reset_lrs(optimizer: Optimizer, lrs: Sequence[float]) -> None:
    """Start every param group at ``lrs`` and forget the ``initial_lr`` of any earlier scheduler.

    torch schedulers read ``group["initial_lr"]`` (kept if present) and ``group["lr"]`` when
    they are constructed; a stale value would make them run from the old bounds.
    """
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group.pop("initial_lr", None)
        group["lr"] = lr


#: the param-group keys torch's CyclicLR and OneCycleLR add when they cycle momentum
CYCLED_MOMENTUM_KEYS = ("base_momentum", "max_momentum")


def undo_momentum_cycling(optimizer: Optimizer) -> str | None:
    """Give back the momentum a replaced ``CyclicLR`` / ``OneCycleLR`` had cycled.

    Those schedulers set each group's ``momentum`` (or ``betas[0]``) to their own
    ``max_momentum`` when they are built, and the optimizer keeps it after they are
    replaced. The value the user gave the optimizer is still in ``optimizer.defaults``.

    Returns:
        What changed, as ``"momentum 0.95 -> 0.9"`` (``None`` when nothing was cycled).
    """
    changes = []
    for group in optimizer.param_groups:
        if not any(key in group for key in CYCLED_MOMENTUM_KEYS):
            continue
        for key in CYCLED_MOMENTUM_KEYS:
            group.pop(key, None)
        if "betas" in group and "betas" in optimizer.defaults:
            before, after = group["betas"], (optimizer.defaults["betas"][0], group["betas"][1])
            group["betas"] = after
        elif "momentum" in group and "momentum" in optimizer.defaults:
            before, after = group["momentum"], optimizer.defaults["momentum"]
            group["momentum"] = after
        else:
            continue
        if before != after:
            changes.append(f"{'betas' if 'betas' in group else 'momentum'} {before} -> {after}")
    return "; ".join(dict.fromkeys(changes)) + " (the optimizer's own setting, restored)" if changes else None


def has_momentum_slot(optimizer: Optimizer) -> bool:
    """Whether the optimizer's groups carry a momentum (SGD, RMSprop) or ``betas`` (Adam) entry."""
    return all("momentum" in g or "betas" in g for g in optimizer.param_groups)


def uses_momentum(optimizer: Optimizer) -> bool:
    """Whether the optimizer actually uses momentum: ``betas`` or a ``momentum`` > 0."""
    return any("betas" in g or g.get("momentum", 0) > 0 for g in optimizer.param_groups)


def check_momentum_range(spec: object, base_momentum: float, max_momentum: float) -> None:
    """Validate ``0 <= base_momentum <= max_momentum < 1``."""
    name = name_of(spec)
    for field, value in (("base_momentum", base_momentum), ("max_momentum", max_momentum)):
        if not is_number(value) or not 0 <= value < 1:
            fail(f"{name}: {field} must be in [0, 1), got {value!r}; typical values are 0.85 and 0.95")
    if base_momentum > max_momentum:
        fail(
            f"{name}: base_momentum ({base_momentum}) must be <= max_momentum ({max_momentum}); "
            f"swap the two"
        )


class ClosedFormLR(LRScheduler):
    """Scheduler whose LR is a pure function of the step count, per param group.

    Subclasses implement :meth:`lr_at`. The state is the step counter and plain numbers,
    so ``state_dict()`` / ``load_state_dict()`` resume a run exactly.

    Args:
        optimizer: Wrapped optimizer.
        min_lrs: Lower LR bound per param group.
        max_lrs: Upper LR bound per param group.
        last_epoch: Index of the last step taken; ``-1`` starts from the beginning.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        min_lrs: Sequence[float],
        max_lrs: Sequence[float],
        last_epoch: int = -1,
    ) -> None:
        self.min_lrs = [float(v) for v in min_lrs]
        self.max_lrs = [float(v) for v in max_lrs]
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, min_lr: float, max_lr: float) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """LR of each param group at step ``last_epoch``."""
        return self._get_closed_form_lr()

    def _get_closed_form_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, lo, hi) for lo, hi in zip(self.min_lrs, self.max_lrs)]
