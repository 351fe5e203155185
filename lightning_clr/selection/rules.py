"""The bound-selection rules: each a short function on a prepared :class:`~.curve.Curve`.

Every public rule ``rule(lrs, losses, **options) -> Bounds`` prepares the curve
(:func:`~lightning_clr.selection.curve.prepare`), reads the bounds with its own short
function, and clamps them into ``lrs[0] <= base_lr < max_lr <= lrs[last finite]``. A curve
that cannot be read (too short, flat) gets the low-end fallback:
``base_lr = lrs[0]``, ``max_lr = min(div * lrs[0], last finite LR)``, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lightning_clr._compat import renamed
from lightning_clr.selection.curve import (
    ArrayLike,
    Curve,
    first_below,
    levels,
    local_fit,
    parabola_min,
    prepare,
    settle_below,
)

_STEEP_WIDEN = 2.5  # steepest: the slope is read with a kernel this many times wider
_REBOUND = 0.05  # valley: a rise above the running minimum ends the stretch (x fall)
_TRIM = 0.05  # valley: its ends are where 5% and 95% of its own fall are done
_MIN_SHARE = 0.5  # valley: a candidate stretch must carry half of the total fall
RENAMED_OPTIONS = {"smooth": "kernel_width"}  # old option name -> new one
#: a flat curve that blows up: max_lr a decade below the LR where it starts to rise (the usual rule
#: of thumb of LR finders, "a tenth of where the loss blows up"); on the suite's one such family
#: (a conv net without normalisation, flat for 200 sweep steps) it lands at 1.1-1.3x the grid's best LR
_BELOW_BLOW_UP = 10.0

#: what a rule's reader returns: ``(base_lr, max_lr, fallback)``
Reading = tuple[float, float, str | None]


@dataclass(frozen=True)
class Bounds:
    """Learning-rate bounds read off a range-test curve.

    Attributes:
        base_lr: Lower bound of the cycle, ``0 < base_lr < max_lr``.
        max_lr: Upper bound of the cycle.
        rule: Name of the rule that produced the bounds (a key of ``RULES``).
        fallback: ``None`` when the rule read both bounds off the curve; otherwise a
            one-line reason why a documented fallback supplied one or both of them.
    """

    base_lr: float
    max_lr: float
    rule: str
    fallback: str | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.base_lr) and self.base_lr > 0):
            raise ValueError(f"base_lr ({self.base_lr}) must be a positive finite number")
        if not (np.isfinite(self.max_lr) and self.max_lr > self.base_lr):
            raise ValueError(f"max_lr ({self.max_lr}) must exceed base_lr ({self.base_lr})")


def _apply(rule: str, lrs: ArrayLike, losses: ArrayLike, div: float, curve_options: dict,
           read: Callable[[Curve], Reading]) -> Bounds:
    """Prepare the curve, read it with ``read`` (or fall back to the low end), clamp."""
    if div <= 1.0:
        raise ValueError(f"div ({div}) must exceed 1 so that base_lr < max_lr")
    c = prepare(lrs, losses, **curve_options)
    rise = c.rise_after_flat(curve_options["flat_tol"]) if c.flat else None
    if rise is not None:  # flat until the loss blows up: the usable range ends a decade below
        top = float(c.lrs[rise]) / _BELOW_BLOW_UP
        reason = (f"{c.unreadable}; the loss rises from lr {c.lrs[rise]:.3g}: max_lr = that / {_BELOW_BLOW_UP:g}, "
                  f"base_lr = max_lr / {div:g}")
        return _finish(c.lrs, top / div, top, rule, reason, div)
    if c.unreadable is not None:
        return _low_end(c.lrs, rule, div, c.unreadable)
    base_lr, max_lr, fallback = read(c)
    return _finish(c.lrs, base_lr, max_lr, rule, fallback, div)


def _curve_options(kernel_width: float, flat_tol: float, min_points: int, old: dict, rule: str) -> dict:
    options = {"kernel_width": kernel_width, "flat_tol": flat_tol, "min_points": min_points}
    options.update(renamed(rule, old, RENAMED_OPTIONS, {}))
    return options


def smith(
    lrs: ArrayLike,
    losses: ArrayLike,
    *,
    start_frac: float = 0.1,
    stop_frac: float = 0.9,
    div: float = 4.0,
    kernel_width: float = 0.1,
    flat_tol: float = 0.02,
    min_points: int = 5,
    **old_names: float,
) -> Bounds:
    """Smith's rule: base where the loss starts to fall, max where it stops falling.

    Smith (2017), arXiv:1506.01186, section 3.3. On the smoothed curve let ``top`` be the
    highest point before the minimum and ``fall = top - min``; the rule reads the
    ``start_frac``-``stop_frac`` span of the fall (by default 10%-90%, see ``stop_frac``):

    - ``base_lr``: the LR after which the loss stays below ``top - start_frac * fall``
      until the minimum (last downward crossing, so a noise dip in the flat head cannot
      trigger it early);
    - ``max_lr``: the first LR after that at which the loss reaches
      ``min + (1 - stop_frac) * fall``, so the bound sits below the minimum, where the loss
      is still falling steadily, rather than on the brink of divergence.

    Crossings are interpolated linearly between points, and each level keeps at least 4
    noise sd from its extreme. If the loss is already falling at the first LR (over the
    first two kernel widths, faster than half its steepest rate), where it starts to fall
    was not recorded: ``base_lr = max_lr / div`` (Smith: a third or a quarter of the
    maximum) and ``fallback`` says so.

    Args:
        lrs: Learning rates of the sweep, increasing, exponential or linear spacing.
        losses: Smoothed loss at each LR; NaN/inf ends the curve.
        start_frac: Fraction of the fall that marks where the loss starts to fall.
        stop_frac: Fraction of the fall after which the loss has stopped falling; 0.9 was
            chosen leave-one-family-out across ``benchmarks/suite.py`` (0.75 and 0.5 read
            ``max_lr`` lower and scored worse).
        div: Ratio ``max_lr / base_lr`` whenever the base falls back to Smith's rule.
        kernel_width: Width of the smoothing kernel in decades of LR (0 keeps the minimum
            of 4 neighbours).
        flat_tol: A fall below this fraction of the top loss counts as a flat curve.
        min_points: Fewer finite points than this count as a curve too short to read.

    Returns:
        The bounds, with ``rule="smith"``.

    Raises:
        ValueError: If no loss is finite, or the inputs are malformed (see
            :func:`~lightning_clr.selection.valid_prefix`).

    Example::

        b = smith(result.lrs, result.losses)
        print(b.base_lr, b.max_lr, b.fallback)
    """
    if not 0.0 < start_frac < stop_frac < 1.0:
        raise ValueError(f"need 0 < start_frac ({start_frac}) < stop_frac ({stop_frac}) < 1")

    def read(c: Curve) -> Reading:
        # 1) base: last downward crossing of top - start_frac * fall before the minimum
        high, low = levels(c.top, c.bottom, start_frac, 1.0 - stop_frac, c.noise)
        x_base, k = settle_below(c.x, c.s, high, c.i_top, c.i_min)
        # 2) max: first crossing of min + (1 - stop_frac) * fall after the base
        max_lr = 10.0 ** first_below(c.x, c.s, low, k, c.i_min)
        # 3) the start of the fall lies below the sweep: Smith's fallback base = max / div
        if c.falling_at_start:
            return max_lr / div, max_lr, _falling_reason(c, div)
        return 10.0**x_base, max_lr, None

    options = _curve_options(kernel_width, flat_tol, min_points, old_names, "smith")
    return _apply("smith", lrs, losses, div, options, read)


def valley(
    lrs: ArrayLike,
    losses: ArrayLike,
    *,
    position: float = 2.0 / 3.0,
    div: float = 4.0,
    kernel_width: float = 0.1,
    flat_tol: float = 0.02,
    min_points: int = 5,
    **old_names: float,
) -> Bounds:
    """Valley rule: the longest descending stretch, read two-thirds of the way down.

    After fastai's ``valley`` suggestion, which is documented as the point two-thirds of the
    way down the longest valley but whose index arithmetic lands about half-way; here the
    position is exact and measured in log LR, so it does not depend on the LR spacing.

    1. A descending stretch is a run of the smoothed curve that never rises more than
       ``max(5% of the total fall, 3 noise sd)`` above its own running minimum.
    2. Its ends are where 5% and 95% of its own fall are done (the 5% crossing is the last
       one before its minimum). Among stretches carrying at least half of the curve's total
       fall, the valley is the widest in log LR (else the one with the largest fall).
    3. ``valley_lr = lr_start ** (1 - position) * lr_end ** position`` (``position`` of the
       way from its start to its end in log LR); ``max_lr = lr_end``, the bottom of the
       valley; ``base_lr = valley_lr / div``, since ``valley_lr`` is a good single peak LR.

    If the valley begins at the first LR while the loss is already falling there, its true
    start (and so ``valley_lr``) is unknown: ``base_lr = max_lr / div`` and ``fallback``
    says so.

    Args:
        lrs: Learning rates of the sweep, increasing, exponential or linear spacing.
        losses: Smoothed loss at each LR; NaN/inf ends the curve.
        position: Where in the valley (0 = start, 1 = end, in log LR) the valley LR sits.
        div: ``base_lr = valley_lr / div``; also the fallback ratio ``max_lr / base_lr``.
        kernel_width: The curve options, as in :func:`smith`.
        flat_tol: As in :func:`smith`.
        min_points: As in :func:`smith`.

    Returns:
        The bounds, with ``rule="valley"``; raises as :func:`smith` does.
    """
    if not 0.0 < position < 1.0:
        raise ValueError(f"position ({position}) must lie strictly between 0 and 1")

    def read(c: Curve) -> Reading:
        x0, x1, i_hi = _widest_valley(c)
        # 3) valley LR at `position` of the way down; max at the bottom of the valley
        max_lr = 10.0**x1
        if i_hi == 0 and c.falling_at_start:
            return max_lr / div, max_lr, _falling_reason(c, div)
        return 10.0 ** (x0 + position * (x1 - x0)) / div, max_lr, None

    options = _curve_options(kernel_width, flat_tol, min_points, old_names, "valley")
    return _apply("valley", lrs, losses, div, options, read)


def _widest_valley(c: Curve) -> tuple[float, float, int]:
    """``(x_start, x_end, i_high)`` of the valley: see :func:`valley`, steps 1 and 2."""
    s, x = c.s, c.x
    tol = max(_REBOUND * c.fall, 3.0 * c.noise)
    best = None  # (qualifies, width or fall, x_start, x_end, i_high)
    # 1) every maximal tolerant-descending run from a local maximum (a run from any other
    #    start is no wider than the one from the maximum next to it)
    peak = np.r_[True, s[1:-1] > s[:-2], True] & np.r_[s[:-1] >= s[1:], True]
    peak[0] = True
    for a in np.flatnonzero(peak):
        seg = s[a:]
        rise = np.flatnonzero(seg[1:] > np.minimum.accumulate(seg)[:-1] + tol)
        run = seg[: rise[0] + 1] if rise.size else seg
        i_hi, i_lo = a + int(np.argmax(run)), a + int(np.argmin(run))
        fall = s[i_hi] - s[i_lo]
        if i_lo <= i_hi or fall <= 0:
            continue
        # 2) its ends: 5% and 95% of its own fall
        high, low = levels(s[i_hi], s[i_lo], _TRIM, _TRIM, c.noise)
        x0, k = settle_below(x, s, high, i_hi, i_lo)
        x1 = first_below(x, s, low, k, i_lo)
        ok = fall >= _MIN_SHARE * c.fall
        key = (ok, x1 - x0 if ok else fall)
        if best is None or key > best[:2]:
            best = (*key, x0, x1, i_hi)
    assert best is not None  # the run through top and minimum always exists
    _, _, x0, x1, i_hi = best
    return x0, x1, i_hi


def steepest(
    lrs: ArrayLike,
    losses: ArrayLike,
    *,
    stop_frac: float = 0.9,
    div: float = 4.0,
    kernel_width: float = 0.1,
    flat_tol: float = 0.02,
    min_points: int = 5,
    **old_names: float,
) -> Bounds:
    """Steepest-descent rule: base at the steepest fall in log LR, max where it stops.

    The single-LR suggestion of torch-lr-finder and Lightning (steepest negative gradient),
    made a pair and read against ``log10(lr)`` rather than the LR itself:

    - ``base_lr``: the minimum of d loss / d log10(lr) between the top and the minimum of
      the curve, with the slope read by a kernel ``2.5 * kernel_width`` decades wide (a derivative
      is noisier than a level) and refined by a parabola through the three nearest points;
    - ``max_lr``: as in ``smith``, the first LR after it at which the loss reaches
      ``min + (1 - stop_frac) * fall``.

    If the steepest slope is at the first LR, the steepest point may lie below the sweep;
    if it is at the minimum, the curve ends in a cliff. Either way ``base_lr = max_lr / div``
    and ``fallback`` says why.

    Args:
        lrs: Learning rates of the sweep, increasing, exponential or linear spacing.
        losses: Smoothed loss at each LR; NaN/inf ends the curve.
        stop_frac: Fraction of the fall after which the loss has stopped falling.
        div: Ratio ``max_lr / base_lr`` whenever the base falls back to Smith's rule.
        kernel_width: The curve options, as in :func:`smith`.
        flat_tol: As in :func:`smith`.
        min_points: As in :func:`smith`.

    Returns:
        The bounds, with ``rule="steepest"``; raises as :func:`smith` does.
    """
    if not 0.0 < stop_frac < 1.0:
        raise ValueError(f"stop_frac ({stop_frac}) must lie strictly between 0 and 1")
    options = _curve_options(kernel_width, flat_tol, min_points, old_names, "steepest")

    def read(c: Curve) -> Reading:
        x, s = c.x, c.s
        # 1) slope with a wider kernel; steepest point between top and minimum
        _, g, _, _ = local_fit(c.x, c.y, _STEEP_WIDEN * options["kernel_width"])
        i = c.i_top + int(np.argmin(g[c.i_top : c.i_min + 1]))
        x_st = parabola_min(x, g, i)
        # 2) max: where the loss has done stop_frac of its fall (at least past the steepest)
        _, level = levels(c.top, c.bottom, 0.0, 1.0 - stop_frac, c.noise)
        x_max = first_below(x, s, level, i, c.i_min) if s[i] > level else x[c.i_min]
        max_lr = 10.0**x_max
        # 3) steepest point at an edge of the fall: fall back to base = max / div
        if i == 0:
            edge = f"steepest fall at the first LR ({c.lrs[0]:.3g}); it may lie below the sweep"
        elif x_st >= x_max:
            edge = f"steepest fall at the loss minimum (lr {10**x_st:.3g}): a cliff"
        else:
            return 10.0**x_st, max_lr, None
        return max_lr / div, max_lr, f"{edge}; base_lr = max_lr / {div:g}"

    return _apply("steepest", lrs, losses, div, options, read)


RULES: dict[str, Callable[..., Bounds]] = {"smith": smith, "valley": valley, "steepest": steepest}


def select_bounds(lrs: ArrayLike, losses: ArrayLike, rule: str = "smith", **options) -> Bounds:
    """Read ``(base_lr, max_lr)`` off a range-test curve with the named rule.

    Args:
        lrs: Learning rates of the sweep, increasing, exponential or linear spacing.
        losses: Smoothed loss at each LR; NaN/inf ends the curve.
        rule: A key of ``RULES``: ``"smith"``, ``"valley"`` or ``"steepest"``.
        **options: Options of that rule (e.g. ``stop_frac``, ``div``, ``kernel_width``).

    Returns:
        The bounds chosen by the rule.

    Raises:
        ValueError: If the rule is unknown, no loss is finite, or the inputs are malformed.

    Example::

        lrs = np.logspace(-6, 1, 100)
        losses = 2.3 - 2.0 / (1 + (1e-3 / lrs) ** 2) + 0.5 * lrs
        bounds = select_bounds(lrs, losses, rule="smith")
    """
    if rule not in RULES:
        raise ValueError(f"unknown bounds rule {rule!r}; choose one of {sorted(RULES)}")
    return RULES[rule](lrs, losses, **options)


def _falling_reason(c: Curve, div: float) -> str:
    return (
        f"loss already falling at the first LR ({c.lrs[0]:.3g}), so where it starts to fall "
        f"was not recorded; base_lr = max_lr / {div:g} (start the sweep lower)"
    )


def _low_end(lr: np.ndarray, rule: str, div: float, reason: str) -> Bounds:
    """Fallback for curves that cannot be read: the safe low end of the sweep.

    ``base_lr = lrs[0]``, ``max_lr = min(div * lrs[0], last finite LR)``; with a single
    finite point, ``max_lr = lrs[0]`` and ``base_lr = lrs[0] / div``.
    """
    if lr.size == 1:
        reason = f"{reason}; using lrs[0] / {div:g}..lrs[0]"
        return Bounds(float(lr[0]) / div, float(lr[0]), rule, reason)
    base, top = float(lr[0]), float(min(div * lr[0], lr[-1]))
    return _finish(lr, base, top, rule, f"{reason}; using the low end of the sweep", div)


def _finish(lr, base: float, top: float, rule: str, fallback: str | None, div: float) -> Bounds:
    """Clamp into ``lrs[0] <= base < max <= lrs[-1]``."""
    lo, hi = float(lr[0]), float(lr[-1])
    top = min(max(top, lo), hi)
    base = min(max(base, lo), hi)
    if not base < top:
        if top <= lo:
            top = min(div * lo, hi)
        base = max(top / div, lo)
        fallback = fallback or f"base and max fell on one point; base_lr = max_lr / {div:g}"
    return Bounds(float(base), float(top), rule, fallback)
