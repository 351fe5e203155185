"""The range test's settings, validated once: each bad value is refused with its name and a fix."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lightning_clr import schedules
from lightning_clr._compat import renamed
from lightning_clr.selection.rules import RENAMED_OPTIONS

#: the spacings of the sweep's LRs
SWEEP_MODES = ("exponential", "linear")
#: the largest LR taken as meant: above it an LR only overflows the weights (1e308 trains at inf)
MAX_LR = 1e4
#: the smallest sweep whose curve the rules read correctly (tests/test_selection.py checks it)
MIN_STEPS = 20
#: what the sweep records at each LR
METRICS = ("train_loss", "val_loss")
#: old argument name -> new one
RENAMED = {"min_lr": "start_lr", "max_lr": "end_lr", "smoothing": "ema_beta"}


@dataclass(frozen=True)
class Settings:
    """What :class:`~lightning_clr.LRRangeTest` was asked for, after validation."""

    schedule: schedules.Schedule
    start_lr: float
    end_lr: float
    num_steps: int
    mode: str
    ema_beta: float
    divergence_threshold: float | None
    rule: str
    rule_options: dict[str, Any]
    bounds: tuple[float, float] | None
    group_scales: list[float] | None
    max_extensions: int
    min_fall: float
    max_reruns: int
    metric: str
    val_batches: int
    replace_scheduler: bool
    progress_bar: bool
    update_attr: bool
    attr_name: str


def _finite_positive(value: Any) -> bool:
    """A usable LR: a number in (0, MAX_LR]."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 < value <= MAX_LR


def _count(value: Any, low: int) -> bool:
    """An ``int`` (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_settings(arguments: dict[str, Any], old_names: dict[str, Any], defaults: Mapping[str, Any],
                   rules: Mapping[str, Callable[..., Any]]) -> Settings:
    """Validate and normalise the arguments of :class:`~lightning_clr.LRRangeTest`.

    Args:
        arguments: the constructor's arguments by name.
        old_names: arguments passed under a name of an earlier version (they warn, see :data:`RENAMED`).
        defaults: the constructor's defaults, to tell an argument passed under both names.
        rules: the selection rules by name.

    Raises:
        ValueError: a value out of range; the message names the argument, the value and the fix.
        TypeError: ``schedule`` is not a :mod:`lightning_clr.schedules` spec, or an unknown argument.
    """
    if "enabled" in old_names:
        raise TypeError("LRRangeTest: enabled= is removed; pass bounds=(base_lr, max_lr) to skip the range test")
    given = {k: arguments[k] for k in RENAMED.values() if arguments[k] != defaults[k]}
    a = {**arguments, **renamed("LRRangeTest", old_names, RENAMED, given)}
    schedule, start_lr, end_lr, num_steps, mode, ema_beta = (
        a[k] for k in ("schedule", "start_lr", "end_lr", "num_steps", "mode", "ema_beta"))
    divergence_threshold, rule, rule_options, bounds, group_scales, max_extensions = (
        a[k] for k in ("divergence_threshold", "rule", "rule_options", "bounds", "group_scales", "max_extensions"))
    if mode not in SWEEP_MODES:
        raise ValueError(f"mode must be one of {SWEEP_MODES}, got {mode!r}")
    if not _finite_positive(start_lr):
        raise ValueError(f"start_lr must be a finite number in (0, {MAX_LR:g}], got {start_lr}; a sweep starts at a "
                         "small LR such as 1e-5")
    if not (_finite_positive(end_lr) and end_lr > start_lr):
        raise ValueError(f"end_lr ({end_lr}) must be a finite number above start_lr ({start_lr}), at most {MAX_LR:g}; "
                         "e.g. end_lr=10")
    if not _count(num_steps, MIN_STEPS):
        raise ValueError(f"num_steps must be an integer >= {MIN_STEPS} to read a curve, got {num_steps!r}; "
                         "200 is the default")
    if not 0 <= ema_beta < 1:
        raise ValueError(f"ema_beta must be in [0, 1), got {ema_beta}; 0 keeps the raw loss")
    if divergence_threshold is not None and not divergence_threshold > 1:
        raise ValueError(f"divergence_threshold must be > 1 (or None), got {divergence_threshold}")
    if rule not in rules:
        raise ValueError(f"rule must be one of {sorted(rules)}, got {rule!r}")
    options = dict(rule_options or {})
    known = [p for p in inspect.signature(rules[rule]).parameters if p not in ("lrs", "losses", "old_names")]
    unknown = sorted(set(options) - set(known) - set(RENAMED_OPTIONS))  # an old name warns in the rule
    if unknown:
        raise ValueError(f"rule_options {unknown} are not options of the {rule!r} rule; it takes {known}")
    if bounds is not None:
        try:
            base, top = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ValueError(f"bounds must be two numbers (base_lr, max_lr), got {bounds!r}") from None
        if not (_finite_positive(base) and _finite_positive(top) and base <= top):
            raise ValueError(f"bounds must satisfy 0 < base_lr <= max_lr <= {MAX_LR:g}, got base_lr={base:g}, "
                             f"max_lr={top:g}; e.g. bounds=[0.01,0.1]")
        bounds = (base, top)
    if group_scales is not None:
        group_scales = [float(s) for s in group_scales]
        if not group_scales or not all(_finite_positive(s) for s in group_scales):
            raise ValueError(
                f"group_scales must be one finite positive number per param group, got {group_scales}; "
                "e.g. [0.1, 1.0] for two groups, or None to keep the optimizer's LR ratios"
            )
    if not _count(max_extensions, 0):
        raise ValueError(f"max_extensions must be an integer >= 0, got {max_extensions!r}; 0 never extends the sweep")
    min_fall, max_reruns = a["min_fall"], a["max_reruns"]
    if isinstance(min_fall, bool) or not isinstance(min_fall, (int, float)) or not 0 <= min_fall < 1:
        raise ValueError(f"min_fall must be a fraction in [0, 1), got {min_fall!r}; 0.1 (the default) reruns a sweep "
                         "that cut the loss by less than 10%, 0 never reruns")
    if not _count(max_reruns, 0):
        raise ValueError(f"max_reruns must be an integer >= 0, got {max_reruns!r}; 0 never reruns a shallow sweep")
    if schedule is not None and not isinstance(schedule, schedules.Schedule):
        raise TypeError(f"schedule must be a lightning_clr.schedules spec, got {type(schedule).__name__}")
    if a["metric"] not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {a['metric']!r}")
    if not _count(a["val_batches"], 1):
        raise ValueError(f"val_batches must be an integer >= 1, got {a['val_batches']!r}; 4 is the default")
    return Settings(schedule if schedule is not None else schedules.Triangular(), float(start_lr), float(end_lr),
                    num_steps, mode, float(ema_beta), divergence_threshold, rule, options, bounds, group_scales,
                    max_extensions, float(min_fall), max_reruns, a["metric"], a["val_batches"],
                    bool(a["replace_scheduler"]), bool(a["progress_bar"]), bool(a["update_attr"]), str(a["attr_name"]))
