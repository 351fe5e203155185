"""The base class of the schedule specs, which owns the param-group work, and the helpers they share.

A schedule spec holds only the *shape* of a schedule. The learning-rate bounds come
from the range test and the step counts from the Trainer, so both are passed to
:meth:`Schedule.build`, which turns the spec into a ``torch.optim.lr_scheduler.LRScheduler``
stepped once per optimizer step.

:meth:`Schedule.build` does the work every schedule shares, once: it checks the step counts,
expands the bounds to one pair per param group, checks momentum cycling, forgets what an
earlier scheduler left in the param groups, and wraps the result in a scheduler whose
``state_dict`` round-trips through checkpoints. A spec states only

- :meth:`Schedule.shape`: its lengths for one run, in optimizer steps (plain numbers), and
- ``lr_at``: its learning rate as a pure function ``lr_at(step, base_lr, max_lr, **shape)``.

Where torch computes a schedule exactly (``CyclicLR``, ``OneCycleLR``), the spec overrides
:meth:`Schedule.torch_scheduler` instead of giving ``lr_at``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lightning_clr.schedules.checks import Bound, check_steps, fail, name_of, require, resolve_bounds

#: a schedule's learning rate at a step: ``lr_at(step, base_lr, max_lr, **shape)``
LRFunction = Callable[..., float]


@dataclass
class Schedule(ABC):
    """Base class of every schedule spec.

    Subclasses are dataclasses of shape parameters, validated in ``__post_init__``; each
    gives :meth:`shape` and either ``lr_at`` (a pure function, wrapped in a
    :class:`ClosedFormLR`) or :meth:`torch_scheduler`.
    """

    #: the schedule as a pure function of the step count, ``lr_at(step, base_lr, max_lr, **shape)``
    lr_at: ClassVar[LRFunction | None] = None

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
        check_steps(self, steps_per_epoch, total_steps)
        lows, highs = resolve_bounds(self, optimizer, base_lr, max_lr)
        self.check_bounds(lows, highs)
        cycle_momentum = self.cycles_momentum(optimizer)
        if cycle_momentum and not has_momentum_slot(optimizer):
            fail(
                f"{name_of(self)}: cycle_momentum=True but {type(optimizer).__name__} has "
                f"no momentum or betas to cycle; set cycle_momentum=False or use SGD/Adam"
            )
        shape = self.shape(steps_per_epoch, total_steps)
        lr_at = type(self).lr_at
        if lr_at is None:
            reset_lrs(optimizer, lows)
            return self.torch_scheduler(optimizer, lows, highs, shape, cycle_momentum)
        return ClosedFormLR(optimizer, lr_at, lows, highs, shape)

    @abstractmethod
    def shape(self, steps_per_epoch: int, total_steps: int | None) -> dict[str, Any]:
        """This run's shape in optimizer steps: the keyword arguments of ``lr_at`` (plain numbers).

        Raises:
            ValueError: The step counts give the schedule no valid shape (e.g. a first cycle
                shorter than one step, or no run length where the shape spans the run).
        """

    def check_bounds(self, lows: list[float], highs: list[float]) -> None:
        """Refuse per-group bounds this schedule cannot follow (every valid pair by default)."""

    def cycles_momentum(self, optimizer: Optimizer) -> bool:
        """Whether the scheduler cycles the optimizer's momentum (never by default)."""
        return False

    def torch_scheduler(
        self, optimizer: Optimizer, lows: list[float], highs: list[float], shape: dict[str, Any], cycle_momentum: bool
    ) -> LRScheduler:
        """torch's own scheduler for this schedule, for specs without ``lr_at``; the groups start at ``lows``."""
        raise NotImplementedError(f"{name_of(self)} gives neither lr_at nor torch_scheduler")

    def cycle_ends(self, *, steps_per_epoch: int, total_steps: int) -> list[int]:
        """Step counts (completed optimizer steps) at which a cycle ends, up to ``total_steps``.

        Schedules without cycles end once, at ``total_steps``.
        """
        self.check(steps_per_epoch=steps_per_epoch, total_steps=total_steps)
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
        check_steps(self, steps_per_epoch, total_steps)
        self.shape(steps_per_epoch, total_steps)


class ClosedFormLR(LRScheduler):
    """Scheduler whose LR is a pure function of the step count, per param group.

    The state is the step counter and plain numbers (the function itself is left out of
    ``state_dict()``), so a checkpoint loads with ``weights_only=True`` and a scheduler built
    from the same spec resumes the run exactly.

    Args:
        optimizer: Wrapped optimizer.
        lr_at: ``lr_at(step, base_lr, max_lr, **shape)``, the LR of one group at ``step``.
        min_lrs: Lower LR bound per param group.
        max_lrs: Upper LR bound per param group.
        shape: The keyword arguments of ``lr_at``.
        last_epoch: Index of the last step taken; ``-1`` starts from the beginning.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_at: LRFunction,
        min_lrs: Sequence[float],
        max_lrs: Sequence[float],
        shape: dict[str, Any],
        last_epoch: int = -1,
    ) -> None:
        self.lr_at = lr_at
        self.shape = dict(shape)
        self.min_lrs = [float(v) for v in min_lrs]
        self.max_lrs = [float(v) for v in max_lrs]
        if last_epoch == -1:  # the groups start at step 0's LR, whatever an earlier scheduler left there
            reset_lrs(optimizer, self._lrs_at(0))
        super().__init__(optimizer, last_epoch)

    def _lrs_at(self, step: int) -> list[float]:
        return [self.lr_at(step, lo, hi, **self.shape) for lo, hi in zip(self.min_lrs, self.max_lrs)]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """LR of each param group at step ``last_epoch``."""
        return self._lrs_at(self.last_epoch)

    def _get_closed_form_lr(self) -> list[float]:
        return self._lrs_at(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state as plain data, without the LR function."""
        return {k: v for k, v in super().state_dict().items() if k != "lr_at"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict`; the LR function stays the one this scheduler was built with."""
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "lr_at"})


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


def check_momentum_range(spec: Any) -> None:
    """Validate the spec's ``0 <= base_momentum <= max_momentum < 1``."""
    for field in ("base_momentum", "max_momentum"):
        require(spec, field, lambda v: 0 <= v < 1, "in [0, 1)", "typical values are 0.85 and 0.95")
    low, high = spec.base_momentum, spec.max_momentum
    if low > high:
        fail(f"{name_of(spec)}: base_momentum ({low}) must be <= max_momentum ({high}); swap the two")
