"""Bounds read off synthetic range-test curves whose answers are known analytically.

The main curve is a logistic fall in log LR from 1.0 to 0.2 whose 5%-95% span is exactly
1e-4..1e-1, followed by a quadratic blow-up above LR 1. On it a fraction ``p`` of the fall
is done at ``log10(lr) = c + w * ln(p / (1 - p))``, so every rule has an exact target.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest

from lightning_clr.selection import (
    RULES,
    Bounds,
    select_bounds,
    smith,
    steepest,
    valid_prefix,
    valley,
)

ALL_RULES = sorted(RULES)
EXP = np.logspace(-6, 1, 200)  # exponential sweep, 1e-6..10
START, END = 1e-4, 1e-1  # 5% and 95% of the fall of the main curve
BLOW = 1.0  # the loss blows up above this LR


def sigmoid_curve(lrs, lo=START, hi=END, blow=BLOW):
    """Loss falling from 1.0 to 0.2 (5%..95% between lo and hi), blowing up after blow."""
    x = np.log10(lrs)
    c = (math.log10(lo) + math.log10(hi)) / 2
    w = (math.log10(hi) - math.log10(lo)) / 2 / math.log(19)
    return 1.0 - 0.8 / (1.0 + np.exp(-(x - c) / w)) + 3.0 * np.maximum(x - math.log10(blow), 0) ** 2


def done(p, lo=START, hi=END):
    """LR at which the fraction p of the logistic fall is done."""
    c = (math.log10(lo) + math.log10(hi)) / 2
    w = (math.log10(hi) - math.log10(lo)) / 2 / math.log(19)
    return 10 ** (c + w * math.log(p / (1 - p)))


def decades(a, b):
    return abs(math.log10(a) - math.log10(b))


def noisy(lrs, sigma, seed, **kw):
    return sigmoid_curve(lrs, **kw) + sigma * np.random.default_rng(seed).standard_normal(lrs.size)


def assert_valid(b: Bounds, lrs, n_valid=None):
    """Within the finite part of the sweep, base below max."""
    n_valid = len(lrs) if n_valid is None else n_valid
    assert lrs[0] <= b.base_lr < b.max_lr <= lrs[n_valid - 1]


# Where each rule should land on the main curve (base_lr, max_lr):
#   smith: 10% and 90% of the fall (its default stop_frac); steepest: the logistic's centre and 90%;
#   valley: the valley is the 5%..95% span 1e-4..1e-1, two-thirds down it is 1e-2,
#   base = 1e-2 / 4, max = the valley's end.
EXPECTED = {
    "smith": (done(0.1), done(0.9)),
    "steepest": (10**-2.5, done(0.9)),
    "valley": (1e-2 / 4, END),
}
# options that put every rule's max_lr where 90% of the fall is done (every rule's default)
AT_90: dict[str, dict] = {}


class TestKnownCurve:
    @pytest.mark.parametrize("rule", ALL_RULES)
    def test_clean_curve_hits_analytic_bounds(self, rule):
        b = select_bounds(EXP, sigmoid_curve(EXP), rule)
        base, top = EXPECTED[rule]
        assert b.fallback is None
        assert decades(b.base_lr, base) < 0.1
        assert decades(b.max_lr, top) < 0.1
        assert_valid(b, EXP)

    def test_smith_base_at_start_of_descent_and_max_where_it_stops(self):
        b = smith(EXP, sigmoid_curve(EXP), stop_frac=0.9)
        assert START / 3 <= b.base_lr <= START * 3
        assert END / 3 <= b.max_lr <= END

    @pytest.mark.parametrize("rule", ALL_RULES)
    def test_max_below_blow_up_and_base_above_plateau(self, rule):
        b = select_bounds(EXP, sigmoid_curve(EXP), rule)
        assert START / 3 < b.base_lr and b.max_lr < BLOW / 3

    @pytest.mark.parametrize("rule", ALL_RULES)
    @pytest.mark.parametrize("seed", range(8))
    def test_noise_keeps_bounds_within_tolerance(self, rule, seed):
        # noise sd 0.02 per point = 2.5% of the fall, on top of the caller's smoothing
        b = select_bounds(EXP, noisy(EXP, 0.02, seed), rule)
        base, top = EXPECTED[rule]
        assert b.fallback is None
        assert decades(b.base_lr, base) < 0.3
        assert decades(b.max_lr, top) < 0.3

    @pytest.mark.parametrize("rule", ALL_RULES)
    def test_heavy_noise_stays_in_the_right_half_decade(self, rule):
        # noise sd 0.04 per point = 5% of the fall: the extremes of the smoothed curve
        # overshoot, so levels must keep clear of them
        base, top = EXPECTED[rule]
        for seed in range(20):
            b = select_bounds(EXP, noisy(EXP, 0.04, seed), rule)
            assert decades(b.base_lr, base) < 0.45, seed
            assert decades(b.max_lr, top) < 0.45, seed

    def test_steepest_point_is_interpolated_between_coarse_points(self):
        lrs = np.logspace(-6, 1, 40)  # 0.18 decade apart; 10**-2.5 lies half-way between two
        b = steepest(lrs, sigmoid_curve(lrs))
        assert decades(b.base_lr, 10**-2.5) < 0.04


class TestSpacing:
    # a linear sweep is sparse at low LR in log space: descent 1e-2..0.3 leaves it a decade
    # of plateau below; blow-up above 1
    KW: ClassVar[dict] = {"lo": 1e-2, "hi": 0.3, "blow": 1.0}
    EXP = np.logspace(-3, math.log10(3), 120)
    LIN = np.linspace(1e-3, 3, 1500)

    @pytest.mark.parametrize("rule", ALL_RULES)
    def test_exponential_and_linear_sweeps_agree(self, rule):
        a = select_bounds(self.EXP, sigmoid_curve(self.EXP, **self.KW), rule)
        b = select_bounds(self.LIN, sigmoid_curve(self.LIN, **self.KW), rule)
        assert a.fallback is None and b.fallback is None
        assert decades(a.base_lr, b.base_lr) < 0.1
        assert decades(a.max_lr, b.max_lr) < 0.1

    @pytest.mark.parametrize("rule", ALL_RULES)
    @pytest.mark.parametrize("seed", range(5))
    def test_noisy_sweeps_agree(self, rule, seed):
        a = select_bounds(self.EXP, noisy(self.EXP, 0.02, seed, **self.KW), rule)
        b = select_bounds(self.LIN, noisy(self.LIN, 0.02, seed, **self.KW), rule)
        assert decades(a.base_lr, b.base_lr) < 0.3
        assert decades(a.max_lr, b.max_lr) < 0.3

    def test_steepest_is_steepest_in_log_lr_for_linear_sweep(self):
        # the slope against the LR itself would put it near the blow-up; in log LR it is
        # the logistic's centre
        b = steepest(self.LIN, sigmoid_curve(self.LIN, **self.KW))
        assert decades(b.base_lr, math.sqrt(1e-2 * 0.3)) < 0.05


class TestValley:
    @staticmethod
    def ramp(lrs):
        """Loss 1.0 until 1e-5, linear in log LR down to 0.2 at 1e-2, flat, blow-up after 1."""
        x = np.log10(lrs)
        return 1.0 - 0.8 * np.clip((x + 5) / 3, 0, 1) + 3.0 * np.maximum(x, 0) ** 2

    def test_valley_lr_two_thirds_down_the_valley(self):
        # valley 1e-5..1e-2: two-thirds down is 1e-3 (half-way, where fastai lands: 10**-3.5)
        b = valley(EXP, self.ramp(EXP))
        assert b.fallback is None
        assert decades(b.base_lr * 4, 1e-3) < 0.1
        assert decades(b.max_lr, 1e-2) < 0.2

    def test_position_moves_the_valley_lr(self):
        b = valley(EXP, self.ramp(EXP), position=0.5, div=2.0)
        assert decades(b.base_lr * 2, 10**-3.5) < 0.1

    def test_long_shallow_drift_is_not_the_valley(self):
        # 3 decades of gentle drift (fall 0.1), a bump, then a 1-decade valley (fall 0.7):
        # only a stretch carrying half the total fall counts
        x = np.log10(EXP)
        y = (
            1.0
            - 0.1 * np.clip((x + 6) / 3, 0, 1)
            + 0.2 * np.exp(-0.5 * ((x + 2.8) / 0.1) ** 2)
            - 0.7 * np.clip((x + 2.5) / 1, 0, 1)
            + 3.0 * np.maximum(x, 0) ** 2
        )
        b = valley(EXP, y)
        assert decades(b.max_lr, 10**-1.5) < 0.2
        assert decades(b.base_lr * 4, 10 ** (-2.5 + 2 / 3)) < 0.2

    def test_picks_the_widest_valley(self):
        # a short dip at 1e-5 (0.3 decade) before the 3-decade main valley
        x = np.log10(EXP)
        y = self.ramp(EXP) - 0.5 * np.exp(-0.5 * ((x + 5.5) / 0.1) ** 2)
        b = valley(EXP, y)
        assert decades(b.max_lr, 1e-2) < 0.2


class TestFallbacks:
    @pytest.mark.parametrize("rule", ALL_RULES)
    @pytest.mark.parametrize(
        "losses",
        [
            np.full(200, 2.3),  # exactly flat
            2.3 + 0.003 * np.random.default_rng(0).standard_normal(200),  # fall < flat_tol
            np.linspace(2.3, 9.0, 200),  # never falls: rises from the first LR on
        ],
        ids=["constant", "tiny-noise", "rising"],
    )
    def test_flat_curve_uses_low_end(self, rule, losses):
        b = select_bounds(EXP, losses, rule)
        assert b.fallback is not None and "flat" in b.fallback
        assert b.base_lr == EXP[0]
        assert b.max_lr == pytest.approx(4 * EXP[0])
        assert_valid(b, EXP)

    @pytest.mark.parametrize("rule", ALL_RULES)
    @pytest.mark.parametrize("seed", range(10))
    def test_fall_within_the_noise_counts_as_flat(self, rule, seed):
        # noise sd 0.05 on a flat loss of 1.0: the smoothed range exceeds flat_tol (2%)
        b = select_bounds(EXP, 1.0 + 0.05 * np.random.default_rng(seed).standard_normal(200), rule)
        assert b.fallback is not None and "flat" in b.fallback

    @pytest.mark.parametrize("rule", ALL_RULES)
    def test_early_nan_is_too_short(self, rule):
        y = sigmoid_curve(EXP)
        y[3:] = np.nan
        b = select_bounds(EXP, y, rule)
        assert b.fallback is not None and "only 3 finite" in b.fallback
        assert b.base_lr == EXP[0] and b.max_lr == EXP[2]
        assert_valid(b, EXP, 3)

    def test_single_finite_point(self):
        y = np.full(10, np.nan)
        y[0] = 2.3
        b = smith(EXP[:10], y)
        assert (b.base_lr, b.max_lr) == (EXP[0] / 4, EXP[0])
        assert b.fallback is not None

    @pytest.mark.parametrize("rule", ALL_RULES)
    def test_sweep_starting_mid_descent_falls_back_to_max_over_4(self, rule):
        lrs = np.logspace(-2.3, 1, 150)  # starts past the steepest point 10**-2.5
        b = select_bounds(lrs, sigmoid_curve(lrs), rule, **AT_90.get(rule, {}))
        assert b.fallback is not None
        assert b.base_lr == pytest.approx(b.max_lr / 4)
        assert_valid(b, lrs)

    @pytest.mark.parametrize("rule", ALL_RULES)
    def test_sweep_ending_mid_descent_reads_within_the_sweep(self, rule):
        lrs = np.logspace(-6, -2, 150)  # stops before the loss stops falling
        b = select_bounds(lrs, sigmoid_curve(lrs), rule, **AT_90.get(rule, {}))
        assert b.fallback is None
        assert_valid(b, lrs)
        assert b.max_lr > 10**-2.5


class TestNonFinite:
    @pytest.mark.parametrize("rule", ALL_RULES)
    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_only_the_finite_prefix_is_used(self, rule, bad):
        cut = int(np.searchsorted(EXP, 0.3))
        y = sigmoid_curve(EXP)
        y[cut] = bad
        y[cut + 1 :] = 0.0  # garbage after the cut would be the global minimum
        b = select_bounds(EXP, y, rule)
        ref = select_bounds(EXP[:cut], sigmoid_curve(EXP[:cut]), rule)
        assert valid_prefix(EXP, y) == cut
        assert b.max_lr < 0.3
        assert (b.base_lr, b.max_lr) == (ref.base_lr, ref.max_lr)

    @pytest.mark.parametrize("rule", ALL_RULES)
    def test_no_finite_loss_raises(self, rule):
        with pytest.raises(ValueError, match="no finite loss.*smallest LR"):
            select_bounds(EXP, np.full(200, np.nan), rule)
        y = sigmoid_curve(EXP)
        y[0] = np.inf
        with pytest.raises(ValueError, match="no finite loss"):
            select_bounds(EXP, y, rule)
        with pytest.raises(ValueError, match="no finite loss"):
            select_bounds([], [], rule)

    def test_valid_prefix(self):
        assert valid_prefix([1e-3, 1e-2, 1e-1, 1], [1.0, 2.0, np.nan, 3.0]) == 2
        assert valid_prefix([1e-3, 1e-2], [1.0, 2.0]) == 2
        assert valid_prefix([1e-3, 1e-2], [-np.inf, 2.0]) == 0


class TestValidation:
    @pytest.mark.parametrize(
        "lrs, losses, message",
        [
            ([1e-3, 1e-2], [1.0], "differ in length"),
            ([0.0, 1e-2], [1.0, 1.0], r"positive, got lrs\[0\] = 0.0"),
            ([1e-3, np.nan], [1.0, 1.0], r"finite and positive, got lrs\[1\]"),
            ([1e-2, 1e-3], [1.0, 1.0], r"strictly increasing.*lrs\[1\] = 0.001"),
            ([1e-3, 1e-3], [1.0, 1.0], "strictly increasing"),
            ([[1e-3, 1e-2]], [[1.0, 1.0]], "1-D"),
        ],
    )
    def test_malformed_input_raises(self, lrs, losses, message):
        with pytest.raises(ValueError, match=message):
            valid_prefix(lrs, losses)
        with pytest.raises(ValueError, match=message):
            smith(lrs, losses)

    def test_unknown_rule_names_rule_and_choices(self):
        with pytest.raises(ValueError, match=r"'fastai'.*\['smith', 'steepest', 'valley'\]"):
            select_bounds(EXP, sigmoid_curve(EXP), "fastai")

    @pytest.mark.parametrize(
        "fn, kwargs",
        [
            (smith, {"start_frac": 0.9, "stop_frac": 0.5}),
            (smith, {"div": 1.0}),
            (steepest, {"stop_frac": 1.0}),
            (valley, {"position": 1.0}),
            (valley, {"min_points": 1}),
        ],
    )
    def test_bad_options_raise(self, fn, kwargs):
        with pytest.raises(ValueError):
            fn(EXP, sigmoid_curve(EXP), **kwargs)

    def test_select_bounds_dispatches_and_forwards_options(self):
        y = sigmoid_curve(EXP)
        assert select_bounds(EXP, y) == smith(EXP, y)
        assert select_bounds(EXP, y, "valley", position=0.5) == valley(EXP, y, position=0.5)
        assert select_bounds(EXP, y, "valley") != valley(EXP, y, position=0.5)

    def test_bounds_reject_inverted_pair(self):
        with pytest.raises(ValueError, match=r"max_lr \(0.01\) must exceed base_lr \(0.1\)"):
            Bounds(0.1, 0.01, "smith")
        with pytest.raises(ValueError, match="positive"):
            Bounds(0.0, 0.01, "smith")


@pytest.mark.parametrize("rule", ALL_RULES)
def test_random_curves_always_give_valid_bounds(rule):
    """Random walks, random lengths, random NaN cuts, torch-free lists: never a bad pair."""
    rng = np.random.default_rng(1234)
    for _ in range(150):
        n = int(rng.integers(2, 80))
        lrs = np.sort(rng.uniform(-7, 1, n))
        lrs = 10 ** np.unique(lrs)
        y = 2.0 + np.cumsum(rng.normal(0, rng.choice([0.01, 0.1, 1.0]), lrs.size))
        cut = int(rng.integers(2, lrs.size + 1))
        y[cut:] = rng.choice([np.nan, np.inf])
        b = select_bounds(list(lrs), list(y), rule)
        assert_valid(b, lrs, cut)


class TestShortSweeps:
    """The example curve of select_bounds' docstring, sampled with few points."""

    @staticmethod
    def curve(n):
        lrs = np.logspace(-6, 1, n)
        return lrs, 2.3 - 2.0 / (1 + (1e-3 / lrs) ** 2) + 0.5 * lrs

    @pytest.mark.parametrize("n", [20, 25, 30])
    @pytest.mark.parametrize("rule", ALL_RULES)
    def test_the_smallest_allowed_sweep_reads_the_curve_like_a_dense_one(self, n, rule):
        from lightning_clr.range_test.settings import MIN_STEPS

        assert MIN_STEPS <= 20
        dense = select_bounds(*self.curve(400), rule)
        b = select_bounds(*self.curve(n), rule)
        assert b.fallback is None
        assert decades(b.base_lr, dense.base_lr) < 0.25 and decades(b.max_lr, dense.max_lr) < 0.25
        assert 1e-4 < b.base_lr < b.max_lr < 1e-2  # the fall of the curve is at 1e-3

    @pytest.mark.parametrize("n", [10, 12, 15])
    def test_a_sparser_sweep_is_refused_with_the_reason(self, n):
        b = smith(*self.curve(n))
        assert b.fallback.startswith(f"points {7 / (n - 1):.2f} decades apart, sparser than 0.4")
        assert "sweep more steps" in b.fallback
        assert (b.base_lr, b.max_lr) == (1e-6, 4e-6)  # the documented low-end fallback, not a reading


class TestFlatThenBlowUp:
    """A net that does not learn within the sweep: flat loss, then a blow-up from lr 1 on."""

    LRS = np.logspace(-5, 2, 200)

    @classmethod
    def curve(cls, seed=0):
        x = np.log10(cls.LRS)
        return 2.3 + 0.01 * np.random.default_rng(seed).standard_normal(x.size) + 5.0 * np.maximum(x, 0) ** 2

    @pytest.mark.parametrize("rule", ALL_RULES)
    @pytest.mark.parametrize("seed", range(3))
    def test_max_lr_is_a_decade_below_the_blow_up(self, rule, seed):
        b = select_bounds(self.LRS, self.curve(seed), rule)
        assert b.fallback.startswith("flat curve") and "max_lr = that / 10" in b.fallback
        assert 0.1 <= b.max_lr <= 0.2  # the rise out of the noise is seen at lr 1..2
        assert b.base_lr == pytest.approx(b.max_lr / 4)

    def test_a_flat_curve_that_never_rises_keeps_the_low_end(self):
        flat = 2.3 + 0.01 * np.random.default_rng(0).standard_normal(self.LRS.size)
        b = smith(self.LRS, flat)
        assert b.base_lr == pytest.approx(1e-5) and b.max_lr == pytest.approx(4e-5)
        assert b.fallback.endswith("using the low end of the sweep")

    @pytest.mark.parametrize("rule", ALL_RULES)
    def test_a_noise_free_flat_curve_blowing_up_above_one(self, rule):
        b = select_bounds(EXP, 2.3 + 3.0 * np.maximum(np.log10(EXP), 0) ** 2, rule)
        assert "flat" in b.fallback and 0.1 <= b.max_lr <= 0.15  # a decade below lr 1 (the rise is seen at 1.0-1.5)
