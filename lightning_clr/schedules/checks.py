"""Checks shared by the schedule specs: shape parameters, bounds and step counts, each refused in
one line that names the value and the fix."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from torch.optim import Optimizer

Bound = float | Sequence[float]


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


def require(
    spec: object,
    field: str,
    ok: Callable[[Any], bool],
    expected: str,
    hint: str = "",
    *,
    optional: bool = False,
    kind: Callable[[object], bool] = is_number,
) -> None:
    """Refuse a shape parameter in one line that names it, its value and the fix.

    Args:
        spec: The spec holding the field.
        field: The field's name.
        ok: Test of a value of the right ``kind``.
        expected: What a good value is, e.g. ``"in (0, 1]"``.
        hint: What to do instead; empty for none.
        optional: Whether ``None`` is accepted.
        kind: Test of the value's type (finite number by default).

    Raises:
        ValueError: ``"SGDR: cycle_decay must be in (0, 1], got 1.5; use 1 to ..."``.
    """
    value = getattr(spec, field)
    if (optional and value is None) or (kind(value) and ok(value)):
        return
    or_none = " or None" if optional else ""
    fail(f"{name_of(spec)}: {field} must be {expected}{or_none}, got {value!r}" + (f"; {hint}" if hint else ""))


def given_as(spec: object, steps_field: str, epochs_field: str) -> str:
    """How a length was given, in steps or in epochs, for messages: ``warmup_steps=5 (schedule.warmup_steps)``."""
    field = steps_field if getattr(spec, steps_field) is not None else epochs_field
    return f"{field}={getattr(spec, field):g} (schedule.{field})"


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


def check_same_ratio(spec: object, lows: list[float], highs: list[float], why: str) -> list[float]:
    """The groups' ``max_lr / base_lr`` ratios, refused unless they agree (one shared factor needs one ratio).

    Args:
        spec: The spec, for the message.
        lows: ``base_lr`` per group.
        highs: ``max_lr`` per group.
        why: What the shared factor is, e.g. ``"a derived gamma"``.
    """
    ratios = [hi / lo for lo, hi in zip(lows, highs)]
    if max(ratios) > min(ratios) * (1 + 1e-9):
        fail(
            f"{name_of(spec)}: {why} needs the same max_lr/base_lr ratio in every param group, "
            f"got {ratios}; pass base_lr values proportional to max_lr"
        )
    return ratios


def check_steps(spec: object, steps_per_epoch: int, total_steps: int | None) -> None:
    """Validate the step counts passed to ``build`` / ``cycle_ends``."""
    if not is_count(steps_per_epoch) or steps_per_epoch < 1:
        fail(f"{name_of(spec)}: steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
    if total_steps is not None and (not is_count(total_steps) or total_steps < 1):
        fail(f"{name_of(spec)}: total_steps must be an integer >= 1 or None, got {total_steps!r}")


def need_total(spec: object, total_steps: int | None) -> int:
    """``total_steps`` as an int, refused when the run has no end."""
    if total_steps is None:
        fail(f"{name_of(spec)} needs total_steps, got None; set max_epochs or max_steps on the Trainer")
    return int(total_steps)


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
    """``epochs`` converted to a whole number of optimizer steps, at least one."""
    return max(1, round(epochs * steps_per_epoch))
