"""Whether a sweep's curve can be read, and what follows when it cannot: one pure decision.

A curve is read when its loss has turned: it fell, and the fall ended before the last
tenth of the LRs. Otherwise, in this order:

1. **extend**: the loss still falls at the last LR (or the curve is flat so far), the sweep
   has not stopped, and it may go further: a decade more at the same spacing (exponential)
   or half the sweep's length at the same step (linear), at most ``max_extensions`` times,
   never above the policy's ``ceiling`` (an ``end_lr`` given; ``MAX_LR`` at ``end_lr=None``)
   nor past its ``max_steps`` (the share of the run a sweep may take);
2. **rerun**: the loss fell by less than ``min_fall`` of its top: the sweep trained too
   little and its loss moved only near the unstable LRs (a CNN on a plateau, cut by 2-5% in
   200 steps, read ``max_lr`` 0.6-1.0; with 400 steps it fell 7-9% and read 0.3, where it
   trains), so it runs again from the same state with twice the steps, at most
   ``max_reruns`` times;
3. **fallback**: too short or too flat to read; a rule's documented fallback chooses the bounds;
4. **read**: the rules read the bounds off the curve.

The sweep asks :func:`decide` when its planned LRs are done; the callback asks it when a
sweep has ended.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from lightning_clr.selection import prepare

READ, EXTEND, RERUN, FALLBACK = "read", "extend", "rerun", "fallback"
#: the actions :func:`decide` returns
ACTIONS = (READ, EXTEND, RERUN, FALLBACK)


@dataclass(frozen=True)
class Policy:
    """What the settings allow a sweep whose curve cannot be read yet.

    Attributes:
        mode: the sweep's spacing, ``"exponential"`` or ``"linear"``.
        num_steps: the planned steps of this run (an extension of a linear sweep adds half).
        max_extensions: the most extensions of one run.
        min_fall: a fall below this fraction of the top loss reruns the sweep; 0 never does.
        max_reruns: the most reruns.
        ceiling: no extension goes above this LR.
        max_steps: no run of the sweep records more points than this, extensions included
            (``None``: no cap; see ``sweep_share``).
    """

    mode: str
    num_steps: int
    max_extensions: int
    min_fall: float
    max_reruns: int
    ceiling: float
    max_steps: int | None = None


@dataclass(frozen=True)
class Decision:
    """What to do with a curve.

    Attributes:
        action: one of :data:`ACTIONS`.
        reason: why, in words.
        lrs: the LRs to sweep next (``extend`` only).
        fall: the fall as a fraction of the top loss (``rerun`` only).
    """

    action: str
    reason: str
    lrs: tuple[float, ...] = ()
    fall: float | None = None


def capped(policy: Policy, cap: int | None) -> Policy:
    """``policy`` within ``cap`` steps a run (``None``: as it is): fewer planned steps if need be, and only the
    reruns whose doubled length still fits."""
    if cap is None:
        return policy
    num_steps = min(policy.num_steps, cap)
    reruns = 0
    while reruns < policy.max_reruns and num_steps * 2 ** (reruns + 1) <= cap:
        reruns += 1
    return replace(policy, num_steps=num_steps, max_reruns=reruns, max_steps=cap)


def extension(lrs: Sequence[float], mode: str, num_steps: int, ceiling: float) -> tuple[float, ...]:
    """The LRs past ``lrs[-1]`` at the sweep's spacing: a decade (exponential) or ``num_steps // 2`` steps
    (linear), none above ``ceiling``."""
    if mode == "exponential":
        step = math.log(lrs[-1] / lrs[-2])
        grid = [lrs[-1] * math.exp(step * k) for k in range(1, max(1, round(math.log(10) / step)) + 1)]
    else:
        step = lrs[-1] - lrs[-2]
        grid = [lrs[-1] + step * k for k in range(1, num_steps // 2 + 1)]
    return tuple(lr for lr in grid if lr <= ceiling)


def decide(lrs: Sequence[float], smooth: Sequence[float], *, extended: int, reruns: int, stop: str,
           policy: Policy) -> Decision:
    """Read, extend, rerun or fall back: what follows a sweep's curve.

    Args:
        lrs: the recorded LRs, increasing.
        smooth: the smoothed loss at each.
        extended: how many times this run was extended already.
        reruns: how many times the sweep was run again already.
        stop: why the sweep ended (``"completed"`` while its planned LRs ran out without a stop);
            only a completed sweep is extended.
        policy: what the settings allow.

    Returns:
        The :class:`Decision`.
    """
    if not lrs:
        return Decision(FALLBACK, "no point was recorded")
    curve = prepare(lrs, smooth)
    n = len(curve.lrs)
    turned = curve.unreadable is None and curve.i_min < n - max(2, n // 10)
    if stop == "completed" and extended < policy.max_extensions and len(lrs) >= 3 and not turned:
        more = extension(lrs, policy.mode, policy.num_steps, policy.ceiling)
        if policy.max_steps is not None:
            more = more[:max(0, policy.max_steps - len(lrs))]
        if more:
            why = curve.unreadable or f"the loss still falls at the last LR ({lrs[-1]:.3g})"
            return Decision(EXTEND, f"{why}; sweeping on to lr {more[-1]:.3g}", more)
    if curve.unreadable is None and policy.min_fall > 0 and reruns < policy.max_reruns and len(lrs) >= 3:
        fall = curve.fall / curve.top if curve.top > 0 else None  # the fraction means nothing otherwise
        if fall is not None and fall < policy.min_fall:
            steps = policy.num_steps
            return Decision(RERUN, f"the loss fell by only {fall:.1%} in {steps} steps (min_fall={policy.min_fall:g}), "
                                   f"too little training to read bounds from; sweeping again with {2 * steps} steps.",
                            fall=fall)
    if curve.unreadable is not None:
        return Decision(FALLBACK, curve.unreadable)
    return Decision(READ, f"the loss turns at lr {curve.lrs[curve.i_min]:.3g}")
