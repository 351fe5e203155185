"""Read a pair of learning-rate bounds ``(base_lr, max_lr)`` off an LR range-test curve.

An LR range test raises the learning rate once per mini-batch and records the (smoothed)
loss. Smith (2017), "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186,
section 3.3, reads two numbers off that curve: the LR where the loss starts to improve is a
lower bound, the LR where it stops improving (or turns ragged) an upper bound; when only
the upper bound is clear, the lower bound is a third or a quarter of it.

Every rule here is a pure function ``rule(lrs, losses, **options) -> Bounds`` that runs the
same pipeline:

1. Validate: equal lengths, one dimension, LRs finite, positive and strictly increasing.
2. Keep the finite prefix: the curve ends at the first NaN/inf (divergence).
3. Re-smooth lightly with a Gaussian kernel in ``log10(lr)`` (``smooth`` decades wide,
   widened locally to reach 4 neighbours): local-linear for the loss, local-quadratic for
   its slope d loss / d log10(lr). Everything is read against the actual log LR, so
   exponential and linear sweeps of one curve give the same bounds (Lightning's
   ``suggestion()`` takes the slope against the LR itself, which in exponential mode
   favours the largest LRs).
4. Take the global minimum of the smoothed loss and the highest point before it ("top");
   their difference is the fall. A curve with fewer than ``min_points`` finite points, or
   whose fall is below ``flat_tol`` of the top loss or within the noise, gets the low-end
   fallback: ``base_lr = lrs[0]``, ``max_lr = min(div * lrs[0], last finite LR)``.
   Levels read off the curve keep at least 4 noise sd from the top and the minimum (the
   extremes of a noisy curve overshoot), and the noise sd is estimated from the residuals.
5. Apply the rule, then clamp: ``lrs[0] <= base_lr < max_lr <= lrs[last finite]``.

Only a curve with no finite point at all, or malformed input, raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["RULES", "Bounds", "select_bounds", "smith", "steepest", "valid_prefix", "valley"]

ArrayLike = Sequence[float] | np.ndarray

_NEIGHBOURS = 4  # the smoothing kernel always reaches this many neighbours
_NOISE_K = 4.0  # a fall must exceed this many sd of the difference of its two ends
_STEEP_WIDEN = 2.5  # steepest: the slope is read with a kernel this many times wider
_FALLING = 0.5  # "already falling at the first LR": start slope below half the steepest
_REBOUND = 0.05  # valley: a rise above the running minimum ends the stretch (x fall)
_TRIM = 0.05  # valley: its ends are where 5% and 95% of its own fall are done
_MIN_SHARE = 0.5  # valley: a candidate stretch must carry half of the total fall


@dataclass(frozen=True)
class Bounds:
    """Learning-rate bounds read off a range-test curve.

    Attributes:
        base_lr: Lower bound of the cycle, ``0 < base_lr < max_lr``.
        max_lr: Upper bound of the cycle.
        rule: Name of the rule that produced the bounds (a key of ``RULES``).
        fallback: ``None`` when the rule read both bounds off the curve; otherwise a
            one-line reason why a documented fallback supplied one or both of them.
        base_index: Index of the curve point nearest (in log LR) to ``base_lr``, for plots.
        max_index: Index of the curve point nearest (in log LR) to ``max_lr``, for plots.
    """

    base_lr: float
    max_lr: float
    rule: str
    fallback: str | None = None
    base_index: int | None = None
    max_index: int | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.base_lr) and self.base_lr > 0):
            raise ValueError(f"base_lr ({self.base_lr}) must be a positive finite number")
        if not (np.isfinite(self.max_lr) and self.max_lr > self.base_lr):
            raise ValueError(f"max_lr ({self.max_lr}) must exceed base_lr ({self.base_lr})")


def valid_prefix(lrs: ArrayLike, losses: ArrayLike) -> int:
    """Number of leading points with a finite loss; the curve is cut at the first NaN/inf.

    Args:
        lrs: Learning rates of the sweep, finite, positive and strictly increasing.
        losses: Loss recorded at each learning rate, same length as ``lrs``.

    Returns:
        ``k`` such that ``losses[:k]`` are all finite and ``losses[k]`` (if any) is not.

    Raises:
        ValueError: If the lengths differ, an input is not one-dimensional, or the LRs are
            not finite, positive and strictly increasing.
    """
    _, y = _validated(lrs, losses)
    bad = np.flatnonzero(~np.isfinite(y))
    return int(bad[0]) if bad.size else int(y.size)


def smith(
    lrs: ArrayLike,
    losses: ArrayLike,
    *,
    start_frac: float = 0.1,
    stop_frac: float = 0.5,
    div: float = 4.0,
    smooth: float = 0.1,
    flat_tol: float = 0.02,
    min_points: int = 5,
) -> Bounds:
    """Smith's rule: base where the loss starts to fall, max where it stops falling.

    Smith (2017), arXiv:1506.01186, section 3.3. On the smoothed curve let ``top`` be the
    highest point before the minimum and ``fall = top - min``; the rule reads the
    ``start_frac``-``stop_frac`` span of the fall (by default 10%-50%, see ``stop_frac``):

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
        stop_frac: Fraction of the fall after which the loss has stopped falling. A short
            sweep lags behind its LR (the loss falls a few steps after the LR that makes it
            fall), so the default 0.5, not 0.9, is where one-epoch sweeps trained best
            (``benchmarks/tune.py``).
        div: Ratio ``max_lr / base_lr`` whenever the base falls back to Smith's rule.
        smooth: Width of the smoothing kernel in decades of LR (0 keeps the minimum of
            4 neighbours).
        flat_tol: A fall below this fraction of the top loss counts as a flat curve.
        min_points: Fewer finite points than this count as a curve too short to read.

    Returns:
        The bounds, with ``rule="smith"``.

    Raises:
        ValueError: If no loss is finite, or the inputs are malformed (see ``valid_prefix``).

    Example::

        b = smith(result.lrs, result.losses)
        print(b.base_lr, b.max_lr, b.fallback)
    """
    if not 0.0 < start_frac < stop_frac < 1.0:
        raise ValueError(f"need 0 < start_frac ({start_frac}) < stop_frac ({stop_frac}) < 1")
    c = _prepare(lrs, losses, "smith", div, smooth, flat_tol, min_points)
    if isinstance(c, Bounds):
        return c
    # 1) base: last downward crossing of top - start_frac * fall before the minimum
    high, low = _levels(c.top, c.bottom, start_frac, 1.0 - stop_frac, c.noise)
    x_base, k = _settle_below(c.x, c.s, high, c.i_top, c.i_min)
    # 2) max: first crossing of min + (1 - stop_frac) * fall after the base
    x_max = _first_below(c.x, c.s, low, k, c.i_min)
    base_lr, max_lr, fallback = 10.0**x_base, 10.0**x_max, None
    # 3) the start of the fall lies below the sweep: Smith's fallback base = max / div
    if c.falling_at_start:
        base_lr, fallback = max_lr / div, _falling_reason(c, div)
    return _finish(c.lrs, base_lr, max_lr, "smith", fallback, div)


def valley(
    lrs: ArrayLike,
    losses: ArrayLike,
    *,
    position: float = 2.0 / 3.0,
    div: float = 4.0,
    smooth: float = 0.1,
    flat_tol: float = 0.02,
    min_points: int = 5,
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
        smooth: Width of the smoothing kernel in decades of LR.
        flat_tol: A fall below this fraction of the top loss counts as a flat curve.
        min_points: Fewer finite points than this count as a curve too short to read.

    Returns:
        The bounds, with ``rule="valley"``.

    Raises:
        ValueError: If no loss is finite, or the inputs are malformed (see ``valid_prefix``).
    """
    if not 0.0 < position < 1.0:
        raise ValueError(f"position ({position}) must lie strictly between 0 and 1")
    c = _prepare(lrs, losses, "valley", div, smooth, flat_tol, min_points)
    if isinstance(c, Bounds):
        return c
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
        high, low = _levels(s[i_hi], s[i_lo], _TRIM, _TRIM, c.noise)
        x0, k = _settle_below(x, s, high, i_hi, i_lo)
        x1 = _first_below(x, s, low, k, i_lo)
        ok = fall >= _MIN_SHARE * c.fall
        key = (ok, x1 - x0 if ok else fall)
        if best is None or key > best[:2]:
            best = (*key, x0, x1, i_hi)
    assert best is not None  # the run through top and minimum always exists
    _, _, x0, x1, i_hi = best
    # 3) valley LR at `position` of the way down; max at the bottom of the valley
    max_lr = 10.0**x1
    base_lr, fallback = 10.0 ** (x0 + position * (x1 - x0)) / div, None
    if i_hi == 0 and c.falling_at_start:
        base_lr, fallback = max_lr / div, _falling_reason(c, div)
    return _finish(c.lrs, base_lr, max_lr, "valley", fallback, div)


def steepest(
    lrs: ArrayLike,
    losses: ArrayLike,
    *,
    stop_frac: float = 0.9,
    div: float = 4.0,
    smooth: float = 0.1,
    flat_tol: float = 0.02,
    min_points: int = 5,
) -> Bounds:
    """Steepest-descent rule: base at the steepest fall in log LR, max where it stops.

    The single-LR suggestion of torch-lr-finder and Lightning (steepest negative gradient),
    made a pair and read against ``log10(lr)`` rather than the LR itself:

    - ``base_lr``: the minimum of d loss / d log10(lr) between the top and the minimum of
      the curve, with the slope read by a kernel ``2.5 * smooth`` decades wide (a derivative
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
        smooth: Width of the smoothing kernel in decades of LR.
        flat_tol: A fall below this fraction of the top loss counts as a flat curve.
        min_points: Fewer finite points than this count as a curve too short to read.

    Returns:
        The bounds, with ``rule="steepest"``.

    Raises:
        ValueError: If no loss is finite, or the inputs are malformed (see ``valid_prefix``).
    """
    if not 0.0 < stop_frac < 1.0:
        raise ValueError(f"stop_frac ({stop_frac}) must lie strictly between 0 and 1")
    c = _prepare(lrs, losses, "steepest", div, smooth, flat_tol, min_points)
    if isinstance(c, Bounds):
        return c
    x, s = c.x, c.s
    # 1) slope with a wider kernel; steepest point between top and minimum
    _, g, _, _ = _local_fit(x, c.y, _STEEP_WIDEN * smooth)
    i = c.i_top + int(np.argmin(g[c.i_top : c.i_min + 1]))
    x_st = _parabola_min(x, g, i)
    # 2) max: where the loss has done stop_frac of its fall (at least past the steepest)
    _, level = _levels(c.top, c.bottom, 0.0, 1.0 - stop_frac, c.noise)
    x_max = _first_below(x, s, level, i, c.i_min) if s[i] > level else x[c.i_min]
    base_lr, max_lr, fallback = 10.0**x_st, 10.0**x_max, None
    # 3) steepest point at an edge of the fall: fall back to base = max / div
    if i == 0:
        fallback = f"steepest fall at the first LR ({c.lrs[0]:.3g}); it may lie below the sweep"
    elif x_st >= x_max:
        fallback = f"steepest fall at the loss minimum (lr {10**x_st:.3g}): a cliff"
    if fallback is not None:
        base_lr, fallback = max_lr / div, f"{fallback}; base_lr = max_lr / {div:g}"
    return _finish(c.lrs, base_lr, max_lr, "steepest", fallback, div)


RULES: dict[str, Callable[..., Bounds]] = {"smith": smith, "valley": valley, "steepest": steepest}


def select_bounds(lrs: ArrayLike, losses: ArrayLike, rule: str = "smith", **kwargs) -> Bounds:
    """Read ``(base_lr, max_lr)`` off a range-test curve with the named rule.

    Args:
        lrs: Learning rates of the sweep, increasing, exponential or linear spacing.
        losses: Smoothed loss at each LR; NaN/inf ends the curve.
        rule: A key of ``RULES``: ``"smith"``, ``"valley"`` or ``"steepest"``.
        **kwargs: Options of that rule.

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
    return RULES[rule](lrs, losses, **kwargs)


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Curve:
    lrs: np.ndarray  # finite prefix of the LRs
    x: np.ndarray  # log10(lrs)
    y: np.ndarray  # finite prefix of the losses
    s: np.ndarray  # smoothed loss
    g: np.ndarray  # d s / d log10(lr)
    noise: float  # typical (median) standard deviation of s from noise in y
    i_top: int
    i_min: int
    h0: float  # kernel width at the first point, decades

    @property
    def top(self) -> float:
        return float(self.s[self.i_top])

    @property
    def bottom(self) -> float:
        return float(self.s[self.i_min])

    @property
    def fall(self) -> float:
        return self.top - self.bottom

    @property
    def falling_at_start(self) -> bool:
        """The curve falls from its first point at over half its steepest rate.

        The rate at the start is a secant over two kernel widths (robust to noise at the
        edge); the steepest rate is the most negative smoothed slope before the minimum.
        """
        if self.i_top != 0:
            return False
        j = int(np.searchsorted(self.x, self.x[0] + 2.0 * self.h0))
        j = min(max(j, 1), self.i_min)
        secant = (self.s[j] - self.s[0]) / (self.x[j] - self.x[0])
        return secant <= _FALLING * float(np.min(self.g[: self.i_min + 1]))


def _validated(lrs: ArrayLike, losses: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    lr = np.asarray(lrs, dtype=float)
    y = np.asarray(losses, dtype=float)
    if lr.ndim != 1 or y.ndim != 1:
        raise ValueError(f"lrs and losses must be 1-D, got shapes {lr.shape} and {y.shape}")
    if lr.size != y.size:
        raise ValueError(f"lrs ({lr.size} points) and losses ({y.size} points) differ in length")
    if not np.all(np.isfinite(lr)) or np.any(lr <= 0):
        bad = int(np.flatnonzero(~(np.isfinite(lr) & (lr > 0)))[0])
        raise ValueError(f"lrs must be finite and positive, got lrs[{bad}] = {lr[bad]}")
    if np.any(np.diff(lr) <= 0):
        bad = int(np.flatnonzero(np.diff(lr) <= 0)[0]) + 1
        raise ValueError(
            f"lrs must be strictly increasing, got lrs[{bad - 1}] = {lr[bad - 1]} "
            f"then lrs[{bad}] = {lr[bad]}"
        )
    return lr, y


def _prepare(lrs, losses, rule, div, smooth, flat_tol, min_points) -> _Curve | Bounds:
    if div <= 1.0:
        raise ValueError(f"div ({div}) must exceed 1 so that base_lr < max_lr")
    if min_points < 2:
        raise ValueError(f"min_points ({min_points}) must be at least 2")
    if smooth < 0 or flat_tol < 0:
        raise ValueError(f"smooth ({smooth}) and flat_tol ({flat_tol}) must be non-negative")
    lr, y = _validated(lrs, losses)
    n = valid_prefix(lr, y)
    if n == 0:
        where = f"lr {lr[0]:.3g}, loss {y[0]}" if y.size else "no points were recorded"
        raise ValueError(
            "range test recorded no finite loss; the model's loss is NaN/inf at the smallest "
            f"LR ({where}): check the model and data, or start the sweep lower"
        )
    lr, y = lr[:n], y[:n]
    if n < min_points:
        reason = f"only {n} finite point(s), fewer than min_points={min_points}"
        return _low_end(lr, rule, div, reason)
    x = np.log10(lr)
    s, g, sd, h = _local_fit(x, y, smooth)
    i_min = int(np.argmin(s))
    i_top = int(np.argmax(s[: i_min + 1]))
    curve = _Curve(lr, x, y, s, g, float(np.median(sd)), i_top, i_min, float(h[0]))
    # a fall must stand out of the noise of both of its ends (larger at the curve's edges)
    need = max(flat_tol * abs(curve.top), _NOISE_K * float(np.hypot(sd[i_top], sd[i_min])))
    if curve.fall <= need:
        rel = curve.fall / abs(curve.top) if curve.top else float("inf")
        return _low_end(
            lr, rule, div, f"flat curve: the loss falls by {curve.fall:.3g} ({rel:.1%} of "
            f"{curve.top:.3g}), not more than {need:.3g} (flat_tol or the noise)"
        )
    return curve


def _local_fit(x: np.ndarray, y: np.ndarray, width: float) -> tuple[np.ndarray, ...]:
    """Gaussian kernel fit in log LR: smoothed values, slopes, their noise sd, kernel widths.

    Values come from a local-linear fit, slopes from a local-quadratic one (an odd gap
    between degree and derivative order keeps both free of first-order bias from uneven
    spacing, such as a linear sweep's in log LR, and from the curve's ends). A value is
    clipped to the range of the data within one kernel width: at a sparse end a one-sided
    kernel would otherwise extrapolate the descent past the plateau.
    """
    n = x.size
    k = min(_NEIGHBOURS, n - 1)
    # distance to the k-th nearest neighbour, from the k points on either side
    near = np.full((n, 2 * k), np.inf)
    for j in range(1, k + 1):
        near[j:, j - 1] = x[j:] - x[:-j]
        near[:-j, k + j - 1] = x[j:] - x[:-j]
    h = np.maximum(width, np.partition(near, k - 1, axis=1)[:, k - 1])
    s, g = np.empty(n), np.empty(n)
    spread, resid_var = np.empty(n), np.empty(n)
    for lo in range(0, n, 128):  # rows in chunks, columns within 6 kernel widths
        rows = np.arange(lo, min(lo + 128, n))
        reach = 5.0 * h[rows].max()
        c0 = np.searchsorted(x, x[rows[0]] - reach)
        c1 = np.searchsorted(x, x[rows[-1]] + reach, side="right")
        d = x[None, c0:c1] - x[rows, None]
        yc = y[c0:c1]
        w = np.exp(-0.5 * (d / h[rows, None]) ** 2)
        wd = w * d
        wd2 = wd * d
        m0, m1, m2 = w.sum(1), wd.sum(1), wd2.sum(1)
        det = (m0 * m2 - m1 * m1)[:, None]
        hat = (w * m2[:, None] - wd * m1[:, None]) / det  # local-linear value weights
        # a smoothed value never leaves the range of the data within one kernel width
        inside = np.abs(d) <= h[rows, None]
        top = np.where(inside, yc, -np.inf).max(1)
        low = np.where(inside, yc, np.inf).min(1)
        s[rows] = np.clip(hat @ yc, low, top)
        if n >= 3:  # local-quadratic slope
            m3, m4 = (wd2 * d).sum(1), (wd2 * d * d).sum(1)
            a = np.stack([np.stack(v, -1) for v in ((m0, m1, m2), (m1, m2, m3), (m2, m3, m4))], -2)
            b = np.stack([w @ yc, wd @ yc, wd2 @ yc], -1)
            g[rows] = np.linalg.solve(a, b[..., None])[:, 1, 0]
        else:
            g[rows] = ((wd * m0[:, None] - w * m1[:, None]) / det) @ yc
        spread[rows] = np.sqrt((hat * hat).sum(1))
        diag = hat[np.arange(rows.size), rows - c0]
        resid_var[rows] = np.maximum(1.0 - 2.0 * diag + spread[rows] ** 2, 1e-12)
    # robust noise sd of y from standardized residuals, carried through the smoother
    z = (y - s) / np.sqrt(resid_var)
    sigma = 1.4826 * float(np.median(np.abs(z - np.median(z))))
    return s, g, sigma * spread, h


def _levels(top: float, bottom: float, below_top: float, above_bottom: float, noise: float):
    """Levels ``below_top`` of the fall under ``top`` and ``above_bottom`` over ``bottom``.

    Each keeps at least 4 noise sd from its extreme (the highest and lowest points of a
    noisy curve overshoot by 2-3 sd), unless the two margins would then meet.
    """
    fall = top - bottom
    a, b = max(below_top * fall, 4.0 * noise), max(above_bottom * fall, 4.0 * noise)
    if a + b >= fall:
        a, b = below_top * fall, above_bottom * fall
    return top - a, bottom + b


def _settle_below(x, s, level, lo, hi) -> tuple[float, int]:
    """Last downward crossing of ``level`` in ``s[lo:hi+1]`` (``s[lo] > level >= s[hi]``).

    Returns the interpolated ``x`` and the index ``k`` of the last point above the level.
    """
    k = lo + int(np.flatnonzero(s[lo : hi + 1] > level)[-1])
    return _cross(x, s, k, level), k


def _first_below(x, s, level, lo, hi) -> float:
    """First downward crossing of ``level`` after ``lo`` (``s[lo] > level >= s[hi]``)."""
    j = lo + int(np.flatnonzero(s[lo : hi + 1] <= level)[0])
    return _cross(x, s, j - 1, level)


def _cross(x, s, k, level) -> float:
    """``x`` where the segment from point ``k`` to ``k + 1`` meets ``level``."""
    t = (s[k] - level) / (s[k] - s[k + 1])
    return float(x[k] + t * (x[k + 1] - x[k]))


def _parabola_min(x, g, i) -> float:
    """Vertex of the parabola through points ``i - 1, i, i + 1``, kept inside them."""
    if i == 0 or i == x.size - 1:
        return float(x[i])
    (x0, x1, x2), (g0, g1, g2) = x[i - 1 : i + 2], g[i - 1 : i + 2]
    den = (x1 - x0) * (g1 - g2) - (x1 - x2) * (g1 - g0)
    if den == 0:
        return float(x1)
    num = (x1 - x0) ** 2 * (g1 - g2) - (x1 - x2) ** 2 * (g1 - g0)
    return float(np.clip(x1 - 0.5 * num / den, x0, x2))


def _falling_reason(c: _Curve, div: float) -> str:
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
        return Bounds(float(lr[0]) / div, float(lr[0]), rule, reason, 0, 0)
    base, top = float(lr[0]), float(min(div * lr[0], lr[-1]))
    return _finish(lr, base, top, rule, f"{reason}; using the low end of the sweep", div)


def _finish(lr, base: float, top: float, rule: str, fallback: str | None, div: float) -> Bounds:
    """Clamp into ``lrs[0] <= base < max <= lrs[-1]`` and attach the plot indices."""
    lo, hi = float(lr[0]), float(lr[-1])
    top = min(max(top, lo), hi)
    base = min(max(base, lo), hi)
    if not base < top:
        if top <= lo:
            top = min(div * lo, hi)
        base = max(top / div, lo)
        fallback = fallback or f"base and max fell on one point; base_lr = max_lr / {div:g}"
    x = np.log10(lr)
    i_base = int(np.argmin(np.abs(x - np.log10(base))))
    i_max = int(np.argmin(np.abs(x - np.log10(top))))
    return Bounds(float(base), float(top), rule, fallback, i_base, i_max)
