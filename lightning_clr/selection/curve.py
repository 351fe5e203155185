"""Curve preparation, shared by every rule: validate, cut at the first NaN/inf, smooth, measure noise.

:func:`prepare` turns ``(lrs, losses)`` into one :class:`Curve`. Smoothing is a Gaussian
kernel in ``log10(lr)`` (``kernel_width`` decades wide, widened locally to reach 4
neighbours): local-linear for the loss, local-quadratic for its slope. Everything is read
against the actual log LR, so exponential and linear sweeps of one curve give the same
bounds. The noise sd is estimated from the residuals and carried through the smoother.
A curve that is too short, or whose fall does not stand out of the noise, is returned
with :attr:`Curve.unreadable` set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ArrayLike = Sequence[float] | np.ndarray

NEIGHBOURS = 4  # the smoothing kernel always reaches this many neighbours
NOISE_K = 4.0  # a fall, and every level read off it, keeps this many noise sd from its extremes
FALLING = 0.5  # "already falling at the first LR": start slope below half the steepest
EXTREME_SD = 2.0  # the top and the minimum are read as confident extremes: value -/+ this many noise sd
MAX_GAP = 0.4  # decades: a curve sampled more sparsely (median spacing) cannot be read


@dataclass(frozen=True)
class Curve:
    """A range-test curve prepared for the rules: validated, cut at the first NaN/inf, smoothed.

    Attributes:
        lrs: the finite prefix of the LRs.
        x: ``log10(lrs)``.
        y: the finite prefix of the losses.
        s: the loss smoothed by a Gaussian kernel in log LR.
        g: its slope ``d s / d log10(lr)``.
        noise: the typical (median) standard deviation of ``s`` from the noise in ``y``.
        i_top: index of the highest point before the minimum (of ``s`` less 2 noise sd).
        i_min: index of the minimum (of ``s`` plus 2 noise sd: a noisy edge is not trusted).
        h0: kernel width at the first point, in decades.
        unreadable: ``None`` when a rule can read the curve, else why not (too short, flat);
            the rules then fall back (see :mod:`~lightning_clr.selection.rules`).
        flat: the curve is unreadable because its fall does not stand out of the noise.
    """

    lrs: np.ndarray  # finite prefix of the LRs
    x: np.ndarray  # log10(lrs)
    y: np.ndarray  # finite prefix of the losses
    s: np.ndarray  # smoothed loss
    g: np.ndarray  # d s / d log10(lr)
    noise: float  # typical (median) standard deviation of s from noise in y
    i_top: int
    i_min: int
    h0: float  # kernel width at the first point, decades
    unreadable: str | None = None
    flat: bool = False

    def rise_after_flat(self, flat_tol: float) -> int | None:
        """Index where a flat curve rises out of its noise past its minimum (the loss blowing up), if it does."""
        level = float(np.median(self.s[: self.i_min + 1]))
        need = max(flat_tol * abs(level), NOISE_K * self.noise)
        up = np.flatnonzero(self.s[self.i_min:] > level + need)
        return self.i_min + int(up[0]) if up.size else None

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
        return secant <= FALLING * float(np.min(self.g[: self.i_min + 1]))


def prepare(
    lrs: ArrayLike, losses: ArrayLike, *, kernel_width: float = 0.1, flat_tol: float = 0.02, min_points: int = 5
) -> Curve:
    """Validate, cut at the first non-finite loss, smooth and measure a range-test curve.

    Args:
        lrs: Learning rates of the sweep, finite, positive and strictly increasing.
        losses: Loss at each LR; NaN/inf ends the curve.
        kernel_width: Width of the smoothing kernel in decades of LR (0 keeps the minimum
            of 4 neighbours).
        flat_tol: A fall below this fraction of the top loss counts as a flat curve.
        min_points: Fewer finite points than this count as a curve too short to read.

    Returns:
        The prepared curve; ``unreadable`` says why a rule cannot read it, if it cannot.

    Raises:
        ValueError: If no loss is finite, an option is out of range, or the inputs are
            malformed (see :func:`valid_prefix`).
    """
    if min_points < 2:
        raise ValueError(f"min_points ({min_points}) must be at least 2")
    if kernel_width < 0 or flat_tol < 0:
        raise ValueError(f"kernel_width ({kernel_width}) and flat_tol ({flat_tol}) must be non-negative")
    lr, y = _validated(lrs, losses)
    n = valid_prefix(lr, y)
    if n == 0:
        where = f"lr {lr[0]:.3g}, loss {y[0]}" if y.size else "no points were recorded"
        raise ValueError(
            "range test recorded no finite loss; the model's loss is NaN/inf at the smallest "
            f"LR ({where}): check the model and data, or start the sweep lower"
        )
    lr, y = lr[:n], y[:n]
    x = np.log10(lr)
    gap = float(np.median(np.diff(x))) if n > 1 else 0.0
    if n < min_points or gap > MAX_GAP:
        i_min = int(np.argmin(y))
        reason = (f"only {n} finite point(s), fewer than min_points={min_points}" if n < min_points else
                  f"points {gap:.2f} decades apart, sparser than {MAX_GAP}: too coarse to tell a fall from its "
                  "shape; sweep more steps or a narrower range")
        return Curve(lr, x, y, y, np.zeros(n), 0.0, int(np.argmax(y[: i_min + 1])), i_min, 0.0, reason)
    s, g, sd, h = local_fit(x, y, kernel_width)
    # extremes that stand out of the noise: an edge's one-sided fit is noisier than the middle, so a
    # point counts as only as low (high) as its smoothed value plus (minus) EXTREME_SD noise sd
    i_min = int(np.argmin(s + EXTREME_SD * sd))
    i_top = int(np.argmax(s[: i_min + 1] - EXTREME_SD * sd[: i_min + 1]))
    curve = Curve(lr, x, y, s, g, float(np.median(sd)), i_top, i_min, float(h[0]))
    # a fall must stand out of the noise of both of its ends (larger at the curve's edges)
    need = max(flat_tol * abs(curve.top), NOISE_K * float(np.hypot(sd[i_top], sd[i_min])))
    if curve.fall <= need:
        rel = curve.fall / abs(curve.top) if curve.top else float("inf")
        reason = (f"flat curve: the loss falls by {curve.fall:.3g} ({rel:.1%} of {curve.top:.3g}), "
                  f"not more than {need:.3g} (flat_tol or the noise)")
        return Curve(lr, x, y, s, g, curve.noise, i_top, i_min, curve.h0, reason, flat=True)
    return curve


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


def local_fit(x: np.ndarray, y: np.ndarray, width: float) -> tuple[np.ndarray, ...]:
    """Gaussian kernel fit in log LR: smoothed values, slopes, their noise sd, kernel widths.

    Values come from a local-linear fit, slopes from a local-quadratic one (an odd gap
    between degree and derivative order keeps both free of first-order bias from uneven
    spacing, such as a linear sweep's in log LR, and from the curve's ends). A value is
    clipped to the range of the data within one kernel width: at a sparse end a one-sided
    kernel would otherwise extrapolate the descent past the plateau.
    """
    n = x.size
    k = min(NEIGHBOURS, n - 1)
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


def levels(top: float, bottom: float, below_top: float, above_bottom: float, noise: float):
    """Levels ``below_top`` of the fall under ``top`` and ``above_bottom`` over ``bottom``.

    Each keeps at least ``NOISE_K`` noise sd from its extreme (the highest and lowest points of a
    noisy curve overshoot by 2-3 sd), unless the two margins would then meet.
    """
    fall = top - bottom
    a, b = max(below_top * fall, NOISE_K * noise), max(above_bottom * fall, NOISE_K * noise)
    if a + b >= fall:
        a, b = below_top * fall, above_bottom * fall
    return top - a, bottom + b


def settle_below(x, s, level, lo, hi) -> tuple[float, int]:
    """Last downward crossing of ``level`` in ``s[lo:hi+1]`` (``s[lo] > level >= s[hi]``).

    Returns the interpolated ``x`` and the index ``k`` of the last point above the level.
    """
    k = lo + int(np.flatnonzero(s[lo : hi + 1] > level)[-1])
    return cross(x, s, k, level), k


def first_below(x, s, level, lo, hi) -> float:
    """First downward crossing of ``level`` after ``lo`` (``s[lo] > level >= s[hi]``)."""
    j = lo + int(np.flatnonzero(s[lo : hi + 1] <= level)[0])
    return cross(x, s, j - 1, level)


def cross(x, s, k, level) -> float:
    """``x`` where the segment from point ``k`` to ``k + 1`` meets ``level``."""
    t = (s[k] - level) / (s[k] - s[k + 1])
    return float(x[k] + t * (x[k + 1] - x[k]))


def parabola_min(x, g, i) -> float:
    """Vertex of the parabola through points ``i - 1, i, i + 1``, kept inside them."""
    if i == 0 or i == x.size - 1:
        return float(x[i])
    (x0, x1, x2), (g0, g1, g2) = x[i - 1 : i + 2], g[i - 1 : i + 2]
    den = (x1 - x0) * (g1 - g2) - (x1 - x2) * (g1 - g0)
    if den == 0:
        return float(x1)
    num = (x1 - x0) ** 2 * (g1 - g2) - (x1 - x2) ** 2 * (g1 - g0)
    return float(np.clip(x1 - 0.5 * num / den, x0, x2))
