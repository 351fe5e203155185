"""The range test's settings, one small check per kind of value: each bad value is refused with its name and a fix.

:class:`~lightning_clr.LRRangeTest` calls these in ``__init__`` and keeps what they return
as its ``_``-prefixed attributes. Each check is a pure function of its arguments.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightning_clr import schedules
from lightning_clr._compat import renamed
from lightning_clr.selection.rules import RENAMED_OPTIONS

#: the spacings of the sweep's LRs
SWEEP_MODES = ("exponential", "linear")
#: the largest LR taken as meant: above it an LR only overflows the weights (1e308 trains at inf);
#: no sweep step, extension included, goes above it
MAX_LR = 1e4
#: the end of the sweep when ``end_lr`` is ``None`` (its default): a first guess, which the sweep passes while
#: the loss still falls (any ``end_lr`` given, this value included, is a ceiling it never passes)
DEFAULT_END_LR = 100.0
#: the smallest sweep whose curve the rules read correctly (tests/test_selection.py checks it)
MIN_STEPS = 20
#: what the sweep records at each LR
METRICS = ("train_loss", "val_loss")
#: old argument name -> new one
RENAMED = {"min_lr": "start_lr", "max_lr": "end_lr", "smoothing": "ema_beta"}


def is_lr(value: Any) -> bool:
    """A usable LR: a number (not a bool) in ``(0, MAX_LR]``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 < value <= MAX_LR


def is_count(value: Any, low: int) -> bool:
    """An ``int`` (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_fraction(value: Any) -> bool:
    """A number (not a bool) in ``[0, 1)``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1


def renamed_arguments(old_names: Mapping[str, Any], current: Mapping[str, Any],
                      defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The values passed under an earlier name, by their new name (each warns, see :data:`RENAMED`).

    Args:
        old_names: the keyword arguments the constructor did not know by name.
        current: the new-name arguments as received (``start_lr``, ``end_lr``, ``ema_beta``).
        defaults: their defaults, to tell an argument passed under both names.

    Raises:
        TypeError: ``enabled=`` (removed), an unknown argument, or one given under both names.
    """
    if "enabled" in old_names:
        raise TypeError("LRRangeTest: enabled= is removed; pass bounds=(base_lr, max_lr) to skip the range test")
    given = {k: v for k, v in current.items() if v != defaults[k]}
    return renamed("LRRangeTest", dict(old_names), RENAMED, given)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; ``ValueError`` naming them otherwise."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_lr(name: str, value: Any, fix: str) -> float:
    """``value`` as a float if it is a usable LR (:func:`is_lr`); ``ValueError`` ending with ``fix`` otherwise."""
    if not is_lr(value):
        raise ValueError(f"{name} must be a finite number in (0, {MAX_LR:g}], got {value}; {fix}")
    return float(value)


def check_end_lr(end_lr: Any, start_lr: float) -> float:
    """``end_lr`` as a float if it is a usable LR above ``start_lr``; ``None`` (the default) is
    :data:`DEFAULT_END_LR`, which the sweep may pass (the caller keeps that ``end_lr is None``)."""
    value = DEFAULT_END_LR if end_lr is None else end_lr
    if not (is_lr(value) and value > start_lr):
        shown = f"None, the default end {DEFAULT_END_LR:g}" if end_lr is None else end_lr
        raise ValueError(f"end_lr ({shown}) must be a finite number above start_lr ({start_lr}), at most "
                         f"{MAX_LR:g}, or None for the default end ({DEFAULT_END_LR:g}, passed while the loss "
                         "still falls); e.g. end_lr=10")
    return float(value)


def check_count(name: str, value: Any, low: int, fix: str, purpose: str = "") -> int:
    """``value`` if it is an ``int`` of at least ``low``; ``ValueError`` naming ``purpose`` and ``fix`` otherwise."""
    if not is_count(value, low):
        raise ValueError(f"{name} must be an integer >= {low}{purpose}, got {value!r}; {fix}")
    return value


def check_ema_beta(value: Any) -> float:
    """The weight of the sweep's moving average, in ``[0, 1)``."""
    if not _is_fraction(value):
        raise ValueError(f"ema_beta must be in [0, 1), got {value}; 0 keeps the raw loss")
    return float(value)


def check_min_fall(value: Any) -> float:
    """The fall below which a sweep runs again, a fraction in ``[0, 1)``."""
    if not _is_fraction(value):
        raise ValueError(f"min_fall must be a fraction in [0, 1), got {value!r}; 0.1 (the default) reruns a sweep "
                         "that cut the loss by less than 10%, 0 never reruns")
    return float(value)


def check_sweep_share(value: Any) -> float | None:
    """``None``, or the largest share of the run's optimizer steps a sweep may take, in ``(0, 1]``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"sweep_share must be a fraction in (0, 1] or None, got {value!r}; 0.5 lets the sweep take "
                         "at most half the run's optimizer steps, None (the default) never shortens it")
    return float(value)


def sweep_cap(sweep_share: float | None, total_steps: int | None) -> int | None:
    """The most optimizer steps one sweep may take in a run of ``total_steps``: ``sweep_share`` of them, but
    never fewer than :data:`MIN_STEPS`; ``None`` when there is no cap (no share, or a run of unknown length)."""
    if sweep_share is None or total_steps is None:
        return None
    return max(MIN_STEPS, math.floor(sweep_share * total_steps))


@dataclass(frozen=True)
class Note:
    """A line to print: ``text``, as a warning when ``warn``."""

    text: str
    warn: bool = False


def cap_note(sweep_share: float | None, total_steps: int | None, *, asked: int, taken: int) -> Note | None:
    """What to say about the sweep's length under ``sweep_share``, if anything: with no share, only
    when the sweep takes more steps than the whole run.

    Args:
        sweep_share: the setting.
        total_steps: the run's optimizer steps (``None``: unknown).
        asked: ``num_steps``.
        taken: the steps the sweep takes.
    """
    if total_steps is None:
        return None
    if sweep_share is None:  # no cap: say what the sweep costs when it outlasts the run, and how to cap it
        if asked <= total_steps:
            return None
        return Note(f"the sweep takes {asked} steps, {asked / total_steps:.2g}x the run's {total_steps} optimizer "
                    f"steps; sweep_share=0.5 would cap it at {sweep_cap(0.5, total_steps)} (coarser bounds), "
                    "and bounds=(base_lr, max_lr) skips it.")
    if sweep_share * total_steps < MIN_STEPS:
        return Note(f"the sweep takes {taken} steps, the fewest a curve can be read from: {taken / total_steps:.2f}x "
                    f"the run's {total_steps} (sweep_share={sweep_share:g}); bounds=(base_lr, max_lr) skips the sweep.",
                    warn=True)
    if taken < asked:
        return Note(f"the run has {total_steps} optimizer steps; the sweep takes {taken} (sweep_share={sweep_share:g}).")
    return None


def check_divergence_threshold(value: Any) -> float | None:
    """``None``, or a multiple of the best loss above 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 1:
        raise ValueError(f"divergence_threshold must be > 1 (or None), got {value}")
    return float(value)


def check_rule_options(rule: str, options: Mapping[str, Any] | None,
                       rules: Mapping[str, Callable[..., Any]]) -> dict[str, Any]:
    """The options of ``rule`` as a new dict; ``ValueError`` for an option the rule does not take.

    An option under its old name passes here and warns in the rule.
    """
    given = dict(options or {})
    known = [p for p in inspect.signature(rules[rule]).parameters if p not in ("lrs", "losses", "old_names")]
    unknown = sorted(set(given) - set(known) - set(RENAMED_OPTIONS))
    if unknown:
        raise ValueError(f"rule_options {unknown} are not options of the {rule!r} rule; it takes {known}")
    return given


def check_bounds(bounds: Any) -> tuple[float, float] | None:
    """``None``, or ``(base_lr, max_lr)`` as floats with ``0 < base_lr <= max_lr <= MAX_LR``."""
    if bounds is None:
        return None
    try:
        base, top = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be two numbers (base_lr, max_lr), got {bounds!r}") from None
    if not (is_lr(base) and is_lr(top) and base <= top):
        raise ValueError(f"bounds must satisfy 0 < base_lr <= max_lr <= {MAX_LR:g}, got base_lr={base:g}, "
                         f"max_lr={top:g}; e.g. bounds=[0.01,0.1]")
    return base, top


def check_group_scales(scales: Any) -> list[float] | None:
    """``None``, or one positive LR scale per param group, as floats."""
    if scales is None:
        return None
    values = [float(s) for s in scales]
    if not values or not all(is_lr(s) for s in values):
        raise ValueError(
            f"group_scales must be one finite positive number per param group, got {values}; "
            "e.g. [0.1, 1.0] for two groups, or None to keep the optimizer's LR ratios"
        )
    return values


def check_schedule(schedule: Any) -> schedules.Schedule:
    """A :mod:`lightning_clr.schedules` spec; ``None`` is the default, ``WSD()``."""
    if schedule is None:
        return schedules.WSD()
    if not isinstance(schedule, schedules.Schedule):
        raise TypeError(f"schedule must be a lightning_clr.schedules spec, got {type(schedule).__name__}")
    return schedule
