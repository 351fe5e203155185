"""Schedule specs: equality with torch's schedulers, exact SGDR and WSD numbers, param groups,
state_dict round trips, stale optimizer state, the base class's share of the work and validation."""

from __future__ import annotations

import copy
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim import SGD, Adagrad, Adam
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LRScheduler,
    OneCycleLR,
    StepLR,
)

from lightning_clr import schedules
from lightning_clr.schedules import (
    SCHEDULES,
    SGDR,
    Constant,
    Cosine,
    ExponentialDecay,
    ExpRange,
    OneCycle,
    Schedule,
    StepDecay,
    Triangular,
    Triangular2,
    sgdr_lr,
    wsd_lr,
)

BASE, MAX = 1e-3, 0.1
SPE = 50  # optimizer steps per epoch
TOTAL = 1200  # optimizer steps of the long runs
RTOL = 1e-9


def make_optimizer(groups: int = 1, lr: float = 0.5, kind: str = "sgd", momentum: float = 0.9):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    params = model.parameters() if groups == 1 else [{"params": [model.weight]}, {"params": [model.bias]}]
    if kind == "adam":
        return Adam(params, lr=lr)
    if kind == "adagrad":
        return Adagrad(params, lr=lr)
    return SGD(params, lr=lr, momentum=momentum)


def momenta(optimizer) -> list[float]:
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in optimizer.param_groups]


def record(optimizer, scheduler, steps: int) -> tuple[list[list[float]], list[list[float]]]:
    """LRs and momenta of every group at step counts 0..steps (optimizer.step, then scheduler.step)."""
    lrs, moms = [], []
    for i in range(steps + 1):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        moms.append(momenta(optimizer))
        if i < steps:
            optimizer.step()
            scheduler.step()
    return lrs, moms


def assert_close(ours, ref, rtol: float = RTOL) -> None:
    torch.testing.assert_close(
        torch.tensor(ours, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64), rtol=rtol, atol=0.0
    )


def build(spec: Schedule, optimizer, base=BASE, peak=MAX, total: int | None = TOTAL, spe: int = SPE):
    return spec.build(optimizer, base, peak, steps_per_epoch=spe, total_steps=total)


def at_max(factory):
    """torch's annealing schedulers start from the optimizer's LR: set it to MAX before constructing."""

    def make(optimizer):
        for g in optimizer.param_groups:
            g["lr"] = MAX
        return factory(optimizer)

    return make


def cyclic(mode: str, step_size: int, cycle_momentum: bool = False, **kwargs):
    return lambda opt: CyclicLR(
        opt, BASE, MAX, step_size_up=step_size, mode=mode, cycle_momentum=cycle_momentum, **kwargs
    )


TORCH_CASES = [
    pytest.param(Triangular(step_size=137), cyclic("triangular", 137), id="triangular"),
    pytest.param(Triangular(step_epochs=2.0), cyclic("triangular", 100), id="triangular-epochs"),
    pytest.param(
        Triangular(step_size=100, cycle_momentum=True),
        cyclic("triangular", 100, cycle_momentum=True, base_momentum=0.85, max_momentum=0.95),
        id="triangular-momentum",
    ),
    pytest.param(Triangular2(step_size=90), cyclic("triangular2", 90), id="triangular2"),
    pytest.param(ExpRange(step_size=80, gamma=0.999), cyclic("exp_range", 80, gamma=0.999), id="exp_range-gamma"),
    pytest.param(ExpRange(step_size=80), cyclic("exp_range", 80, gamma=0.5 ** (1 / 160)), id="exp_range-derived"),
    pytest.param(
        SGDR(cycle_steps=100, cycle_mult=1, cycle_decay=1.0, floor=None),  # anneal to base_lr
        at_max(lambda o: CosineAnnealingWarmRestarts(o, T_0=100, T_mult=1, eta_min=BASE)),
        id="sgdr-mult1-base",
    ),
    pytest.param(
        SGDR(cycle_epochs=1.0, cycle_mult=2, cycle_decay=1.0, floor=0.0),  # to zero, torch's default eta_min
        at_max(lambda o: CosineAnnealingWarmRestarts(o, T_0=SPE, T_mult=2)),
        id="sgdr-mult2-zero",
    ),
    pytest.param(
        SGDR(cycle_steps=70, cycle_mult=2, cycle_decay=1.0, eta_min=5e-3),
        at_max(lambda o: CosineAnnealingWarmRestarts(o, T_0=70, T_mult=2, eta_min=5e-3)),
        id="sgdr-eta_min",
    ),
    pytest.param(
        OneCycle(pct_start=0.3),  # torch's default
        lambda o: OneCycleLR(o, max_lr=MAX, total_steps=TOTAL, div_factor=MAX / BASE),
        id="one_cycle",
    ),
    pytest.param(
        OneCycle(pct_start=0.25, anneal_strategy="linear", final_div_factor=100.0, three_phase=True),
        lambda o: OneCycleLR(
            o,
            max_lr=MAX,
            total_steps=TOTAL,
            pct_start=0.25,
            anneal_strategy="linear",
            div_factor=MAX / BASE,
            final_div_factor=100.0,
            three_phase=True,
        ),
        id="one_cycle-three_phase",
    ),
    pytest.param(StepDecay(step_size=100, gamma=0.5), at_max(lambda o: StepLR(o, 100, gamma=0.5)), id="step"),
    pytest.param(
        StepDecay(step_epochs=5.0),
        at_max(lambda o: StepLR(o, 250, gamma=(BASE / MAX) ** (1 / 4))),  # drops at 250..1000
        id="step-derived",
    ),
    pytest.param(ExponentialDecay(gamma=0.998), at_max(lambda o: ExponentialLR(o, gamma=0.998)), id="exp_decay"),
    pytest.param(
        ExponentialDecay(),
        at_max(lambda o: ExponentialLR(o, gamma=(BASE / MAX) ** (1 / TOTAL))),
        id="exp_decay-derived",
    ),
    pytest.param(
        Cosine(), at_max(lambda o: CosineAnnealingLR(o, T_max=TOTAL, eta_min=BASE)), id="cosine"
    ),
]

# One configuration of every spec, short enough to show its features within 400 steps.
SHORT = 400
ALL_SPECS = [
    pytest.param(Constant(position=0.3), id="constant"),
    pytest.param(Triangular(step_size=60), id="triangular"),
    pytest.param(Triangular(step_size=60, cycle_momentum=True), id="triangular-momentum"),
    pytest.param(Triangular2(step_size=60), id="triangular2"),
    pytest.param(ExpRange(step_size=60), id="exp_range"),
    pytest.param(SGDR(cycle_steps=50, cycle_mult=2), id="sgdr"),
    pytest.param(SGDR(cycle_steps=40, cycle_mult=1.5, cycle_decay=0.7, warmup_steps=15), id="sgdr-warmup"),
    pytest.param(SGDR(cycle_steps=40, cycle_mult=1.5, restart_warmup_steps=6), id="sgdr-restart-warmup-steps"),
    pytest.param(OneCycle(), id="one_cycle"),
    pytest.param(StepDecay(step_size=70), id="step"),
    pytest.param(ExponentialDecay(), id="exp_decay"),
    pytest.param(Cosine(), id="cosine"),
    pytest.param(schedules.WSD(), id="wsd"),
    pytest.param(schedules.WSD(warmup=0.1, decay=0.3, decay_shape="cosine"), id="wsd-cosine"),
]


class TestMatchesTorch:
    @pytest.mark.parametrize("spec,reference", TORCH_CASES)
    def test_lr_and_momentum_every_step(self, spec, reference):
        ours_opt, ref_opt = make_optimizer(), make_optimizer()
        ours = record(ours_opt, build(spec, ours_opt), TOTAL)
        ref = record(ref_opt, reference(ref_opt), TOTAL)
        assert_close(ours[0], ref[0])
        assert_close(ours[1], ref[1])
        assert len({round(lr[0], 12) for lr in ours[0]}) > 3  # the schedule actually moves

    def test_one_cycle_cycles_adam_beta1(self):
        ours_opt, ref_opt = make_optimizer(kind="adam"), make_optimizer(kind="adam")
        ours = record(ours_opt, build(OneCycle(pct_start=0.3), ours_opt), TOTAL)
        ref = record(ref_opt, OneCycleLR(ref_opt, max_lr=MAX, total_steps=TOTAL, div_factor=MAX / BASE), TOTAL)
        assert_close(ours[0], ref[0])
        assert_close(ours[1], ref[1])
        assert ours[1][0] == [0.95] and ours[1][int(0.3 * TOTAL) - 1] == [pytest.approx(0.85)]

    @pytest.mark.parametrize("spec", [OneCycle(), Triangular(step_size=10)], ids=["one_cycle", "triangular"])
    def test_momentum_left_alone_without_momentum(self, spec):
        optimizer = make_optimizer(momentum=0.0)
        _, moms = record(optimizer, build(spec, optimizer), 100)
        assert all(m == [0.0] for m in moms)

    def test_constant(self):
        optimizer = make_optimizer(groups=2)
        lrs, _ = record(optimizer, build(Constant(), optimizer, [BASE, 10 * BASE], [MAX, 10 * MAX]), 300)
        assert_close(lrs, [[0.01, 0.1]] * 301, rtol=1e-12)  # geometric mean of 1e-3 and 0.1
        assert build(Constant(position=0), optimizer).get_last_lr() == [pytest.approx(BASE)] * 2
        assert build(Constant(position=1), optimizer).get_last_lr() == [pytest.approx(MAX)] * 2


class TestSGDR:
    def lrs(self, spec: SGDR, steps: int, base=0.01, peak=0.1) -> list[float]:
        optimizer = make_optimizer()
        return [lr[0] for lr in record(optimizer, build(spec, optimizer, base, peak, total=None, spe=10), steps)[0]]

    @pytest.mark.parametrize(
        "spec,floor_lr",
        [
            (SGDR(cycle_steps=10, cycle_mult=1.5, cycle_decay=0.7, warmup_steps=4, floor=0.0), 0.0),
            (SGDR(cycle_steps=10, cycle_mult=1.5, cycle_decay=0.7, warmup_steps=4, floor=0.2), 0.02),
            (SGDR(cycle_steps=10, cycle_mult=1.5, cycle_decay=0.7, warmup_steps=4, eta_min=0.003), 0.003),
            (SGDR(cycle_steps=10, cycle_mult=1.5, cycle_decay=0.7, warmup_steps=4, floor=None), 0.01),
            (SGDR(cycle_steps=10, cycle_mult=1.5, cycle_decay=0.7, warmup_steps=4, floor=0.2, restart_warmup=0.25), 0.02),
        ],
        ids=["floor-0", "floor-0.2", "eta_min", "base_lr", "restart-warmup"],
    )
    def test_floor_at_every_step(self, spec, floor_lr):
        # warmup 0.01 -> 0.1 over 4 steps, then restarts at 4 + (0, 10, 25, 48, 82); cycle i peaks at
        # floor + (0.1 - floor) * 0.7**i and anneals by cosine to the floor
        lrs = self.lrs(spec, 120)
        starts = [4 + s for s in (0, 10, 25, 48, 82, 132)]
        for step, lr in enumerate(lrs):
            if step < 4:
                expected = 0.01 + 0.09 * step / 4
            else:
                i = max(k for k, s in enumerate(starts) if s <= step)
                peak = floor_lr + (0.1 - floor_lr) * 0.7**i
                r = (step - starts[i]) / (starts[i + 1] - starts[i])
                w = spec.restart_warmup if i > 0 else 0.0  # after a restart: a linear rise over a fraction w
                expected = floor_lr + (peak - floor_lr) * (r / w if r < w else
                                                          0.5 * (1 + math.cos(math.pi * (r - w) / (1 - w))))
            assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15), f"step {step}"
        assert min(lrs[4:]) >= floor_lr - 1e-15 and lrs[starts[2] - 1] < floor_lr + 0.02 * (0.1 - floor_lr)  # cycle 2 ends low

    def test_default_restart_peaks_halve(self):
        # the defaults: anneal to base_lr, each restart's peak half as far above it as the one before
        lrs = self.lrs(SGDR(cycle_steps=10, cycle_mult=1), 30)
        assert [lrs[s] for s in (0, 10, 20)] == pytest.approx([0.1, 0.055, 0.0325], rel=1e-12)
        assert min(lrs) > 0.01

    @pytest.mark.parametrize("fraction", [0.0, 0.5], ids=["alone", "overrides-fraction"])
    def test_restart_warmup_steps_at_every_step(self, fraction):
        # restarts at 4 + (0, 10, 25, 48, 82): cycles of 10, 15, 23, 34, 50 steps; after each restart the LR
        # climbs from the floor (0.02) to the cycle's peak over 3 steps, then the cosine takes the rest
        spec = SGDR(cycle_steps=10, cycle_mult=1.5, cycle_decay=0.7, warmup_steps=4, floor=0.2, restart_warmup=fraction,
                    restart_warmup_steps=3)
        lrs = self.lrs(spec, 120)
        starts = [4 + s for s in (0, 10, 25, 48, 82, 132)]
        for step, lr in enumerate(lrs[4:], start=4):
            i = max(k for k, s in enumerate(starts) if s <= step)
            j, length = step - starts[i], starts[i + 1] - starts[i]
            peak = 0.02 + 0.08 * 0.7**i
            ramp = 3 if i > 0 else 0
            expected = (0.02 + (peak - 0.02) * j / 3 if j < ramp else
                        0.02 + 0.5 * (peak - 0.02) * (1 + math.cos(math.pi * (j - ramp) / (length - ramp))))
            assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15), f"step {step}"
        assert [lrs[s] for s in (14, 15, 16, 17)] == pytest.approx([0.02, 0.02 + 0.056 / 3, 0.02 + 0.112 / 3, 0.076])

    def test_restart_warmup_steps_zero_is_the_published_restart(self):
        assert self.lrs(SGDR(cycle_steps=10, restart_warmup_steps=0), 40) == self.lrs(SGDR(cycle_steps=10), 40)

    @pytest.mark.parametrize(
        "spec,total,shortest",
        [
            (SGDR(cycle_steps=10, cycle_mult=1, restart_warmup_steps=10), 100, 10),
            (SGDR(cycle_steps=10, cycle_mult=1, restart_warmup_steps=10), None, 10),
            (SGDR(cycle_steps=8, cycle_mult=0.5, restart_warmup_steps=2), 100, 1),  # cycles of 8, 4, 2, 1 steps
        ],
    )
    def test_restart_warmup_steps_must_fit_in_every_restarted_cycle(self, spec, total, shortest):
        pattern = rf"restart_warmup_steps={spec.restart_warmup_steps} does not fit in a restarted cycle of {shortest} "
        with pytest.raises(ValueError, match=pattern):
            _build_error(spec, total=total)()
        with pytest.raises(ValueError, match=pattern):
            spec.check(steps_per_epoch=SPE, total_steps=total)

    def test_restart_warmup_steps_only_checks_the_cycles_the_run_reaches(self):
        spec = SGDR(cycle_steps=8, cycle_mult=0.5, restart_warmup_steps=2)  # the run ends in the 4-step cycle
        optimizer = make_optimizer()
        lrs = [lr[0] for lr in record(optimizer, build(spec, optimizer, 0.01, 0.1, total=10, spe=10), 10)[0]]
        assert lrs[8:] == pytest.approx([0.01, 0.01 + 0.045 / 2, 0.055], rel=1e-12)  # base_lr, up to the peak 0.055

    def test_floor_scales_with_each_groups_max_lr(self):
        optimizer = make_optimizer(groups=2)
        scheduler = build(SGDR(cycle_steps=10, cycle_mult=1, cycle_decay=1.0, floor=0.1), optimizer, [0.01, 0.1], [0.1, 1.0], spe=10)
        lrs, _ = record(optimizer, scheduler, 20)
        for step in range(11):
            expected = 0.01 + 0.5 * 0.09 * (1 + math.cos(math.pi * (step % 10) / 10))
            assert lrs[step] == pytest.approx([expected, 10 * expected], rel=1e-12)

    def test_fractional_mult_restarts(self):
        # T0 = 10, mult 1.5: boundaries 10, 25, 47.5, 81.25 -> restarts at steps 10, 25, 48, 82
        lrs = self.lrs(SGDR(cycle_steps=10, cycle_mult=1.5, cycle_decay=1.0, floor=None), 90)
        for restart in (0, 10, 25, 48, 82):
            assert lrs[restart] == pytest.approx(0.1, rel=1e-12)
        cosine = lambda t, length: 0.01 + 0.045 * (1 + math.cos(math.pi * t / length))
        assert lrs[9] == pytest.approx(cosine(9, 10), rel=1e-12)
        assert lrs[24] == pytest.approx(cosine(14, 15), rel=1e-12)
        assert lrs[47] == pytest.approx(cosine(22, 23), rel=1e-12)
        assert lrs[60] == pytest.approx(cosine(12, 34), rel=1e-12)
        assert all(lrs[i + 1] < lrs[i] for i in range(48, 81))  # monotone within a cycle

    def test_cycle_decay_peaks(self):
        lrs = self.lrs(SGDR(cycle_steps=10, cycle_mult=1, cycle_decay=0.5, floor=None), 40)
        assert [lrs[s] for s in (0, 10, 20, 30)] == pytest.approx([0.1, 0.055, 0.0325, 0.02125], rel=1e-12)

    def test_warmup_is_linear_then_cycles_shift(self):
        lrs = self.lrs(SGDR(cycle_steps=20, cycle_mult=2, warmup_epochs=0.5, cycle_decay=1.0, floor=None), 70)  # 5 warmup steps
        assert lrs[:6] == pytest.approx([0.01, 0.028, 0.046, 0.064, 0.082, 0.1], rel=1e-12)
        assert lrs[25] == pytest.approx(0.1, rel=1e-12) and lrs[65] == pytest.approx(0.1, rel=1e-12)
        assert lrs[15] == pytest.approx(0.055, rel=1e-12)  # half way through the first cycle

    def test_fractional_first_cycle_from_epochs(self):
        spec = SGDR(cycle_epochs=1.5, cycle_mult=1, cycle_decay=1.0, floor=None)  # 7 steps per epoch: T0 = 10.5 steps
        optimizer = make_optimizer()
        lrs = [lr[0] for lr in record(optimizer, build(spec, optimizer, 0.01, 0.1, spe=7), 43)[0]]
        assert spec.cycle_ends(steps_per_epoch=7, total_steps=43) == [11, 21, 32, 42]
        assert [lrs[s] for s in (0, 11, 21, 32, 42)] == pytest.approx([0.1] * 5, rel=1e-12)
        assert lrs[20] == pytest.approx(0.01 + 0.045 * (1 + math.cos(math.pi * 9 / 10)), rel=1e-12)

    @pytest.mark.parametrize(
        "first_cycle,mult,restart",
        [
            (10, 1.2, 22),  # boundary 10 + 12 evaluates to 22.000000000000004
            (100, 1.2, 364),  # the closed-form log puts step 364 in cycle 2 instead of 3
            (10, 0.9, 19),  # the same for shrinking cycles: 10 + 9
        ],
    )
    def test_restart_not_misplaced_by_float_error(self, first_cycle, mult, restart):
        assert sgdr_lr(restart, 0.01, 0.1, first_cycle=first_cycle, cycle_mult=mult) == 0.1
        assert sgdr_lr(restart - 1, 0.01, 0.1, first_cycle=first_cycle, cycle_mult=mult) < 0.02

    def test_shrinking_cycles_end_annealed(self):
        spec = SGDR(cycle_steps=8, cycle_mult=0.5, cycle_decay=1.0, floor=0.05)  # 8, 4, 2, 1 steps, then nothing left
        assert spec.cycle_ends(steps_per_epoch=1, total_steps=100) == [8, 12, 14, 15]
        lrs = self.lrs(spec, 30)
        assert [lrs[s] for s in (0, 8, 12, 14)] == pytest.approx([0.1] * 4, rel=1e-12)
        assert lrs[15:] == [pytest.approx(0.005, rel=1e-12)] * 16  # stays at the floor, 0.05 * max_lr

    @pytest.mark.parametrize(
        "spec,ends",
        [
            (SGDR(cycle_steps=100, cycle_mult=1), [100, 200, 300, 400, 500]),
            (SGDR(cycle_steps=50, cycle_mult=2), [50, 150, 350]),
            (SGDR(cycle_steps=10, cycle_mult=1.5), [10, 25, 48, 82, 132, 208, 322, 493]),
            (SGDR(cycle_steps=40, cycle_mult=2, warmup_steps=20), [60, 140, 300]),
        ],
    )
    def test_cycle_ends(self, spec, ends):
        assert spec.cycle_ends(steps_per_epoch=SPE, total_steps=500) == ends

    def test_get_lr_outside_step_does_not_warn(self):
        optimizer = make_optimizer()
        scheduler = build(SGDR(cycle_steps=10), optimizer)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert scheduler.get_lr() == pytest.approx([MAX])


WSD_SHAPES = {"linear": lambda p: 1 - p, "cosine": lambda p: (1 + math.cos(math.pi * p)) / 2,
              "1-sqrt": lambda p: 1 - math.sqrt(p)}


class TestWSD:
    """Warmup-stable-decay against its closed form: base + (max - base) * min(rise, fall)."""

    def expected(self, step, total, warmup, decay, shape, base=0.01, peak=0.1):
        rise = min(step / (warmup * total), 1.0) if warmup > 0 else 1.0
        decay_start = total - decay * total
        fall = WSD_SHAPES[shape](min(max((step - decay_start) / (decay * total), 0.0), 1.0))
        return base + (peak - base) * min(rise, fall)

    @pytest.mark.parametrize(
        "total,warmup,decay,shape",
        [
            (1000, 0.05, 0.2, "1-sqrt"),  # the defaults
            (400, 0.1, 0.1, "linear"),
            (10, 0.2, 0.3, "linear"),
            (13, 0.05, 0.2, "1-sqrt"),  # warm-up shorter than a step: step 0 at base_lr, step 1 at max_lr
            (7, 0.0, 1.0, "cosine"),  # no warm-up, no plateau: Cosine()
            (19, 0.5, 0.5, "cosine"),  # no plateau
            (3, 0.3, 0.3, "1-sqrt"),
        ],
    )
    def test_every_step(self, total, warmup, decay, shape):
        spec = schedules.WSD(warmup=warmup, decay=decay, decay_shape=shape)
        optimizer = make_optimizer()
        lrs, _ = record(optimizer, build(spec, optimizer, 0.01, 0.1, total=total, spe=5), total + 5)
        for step, lr in enumerate(lrs):
            expected = self.expected(step, total, warmup, decay, shape)
            assert lr[0] == pytest.approx(expected, rel=1e-12), f"step {step}"
        assert lrs[total:] == [[pytest.approx(0.01, rel=1e-12)]] * 6  # the run ends at base_lr and stays there

    def test_numbers_of_a_ten_step_run(self):
        spec = schedules.WSD(warmup=0.2, decay=0.3, decay_shape="linear")
        optimizer = make_optimizer()
        lrs, _ = record(optimizer, build(spec, optimizer, 0.01, 0.1, total=10), 10)
        assert [lr[0] for lr in lrs] == pytest.approx(
            [0.01, 0.055, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.07, 0.04, 0.01], rel=1e-12
        )

    def test_one_minus_sqrt_decays_faster_than_linear_at_first(self):
        assert wsd_lr(85, 0.0, 1.0, 100, decay=0.2, decay_shape="1-sqrt") == pytest.approx(0.5, rel=1e-12)
        assert wsd_lr(85, 0.0, 1.0, 100, decay=0.2, decay_shape="linear") == pytest.approx(0.75, rel=1e-12)
        assert wsd_lr(90, 0.0, 1.0, 100, decay=0.2, decay_shape="cosine") == pytest.approx(0.5, rel=1e-12)

    def test_short_run_state_dict_round_trip(self):
        spec = schedules.WSD(warmup=0.25, decay=0.5)
        optimizer = make_optimizer(groups=2)
        scheduler = build(spec, optimizer, [BASE, 10 * BASE], [MAX, 10 * MAX], total=12)
        record(optimizer, scheduler, 5)
        buffer = io.BytesIO()
        torch.save(scheduler.state_dict(), buffer)
        rest, _ = record(optimizer, scheduler, 7)
        buffer.seek(0)
        fresh = make_optimizer(groups=2)
        resumed = build(spec, fresh, [BASE, 10 * BASE], [MAX, 10 * MAX], total=12)
        resumed.load_state_dict(torch.load(buffer, weights_only=True))
        assert resumed.get_lr() == rest[0]
        fresh.param_groups[0]["lr"], fresh.param_groups[1]["lr"] = rest[0]
        again, _ = record(fresh, resumed, 7)
        assert again == rest and rest[-1] == [pytest.approx(BASE), pytest.approx(10 * BASE)]

    @pytest.mark.parametrize(
        "kwargs,pattern",
        [
            ({"warmup": 1.0}, r"WSD: warmup must be in \[0, 1\) \(a fraction of the run\), got 1\.0"),
            ({"decay": 0.0}, r"WSD: decay must be in \(0, 1\] \(a fraction of the run\), got 0\.0"),
            ({"warmup": 0.5, "decay": 0.6}, r"WSD: warmup \(0\.5\) \+ decay \(0\.6\) must be <= 1"),
            ({"decay_shape": "sqrt"}, r"WSD: decay_shape must be 'linear' or 'cosine' or '1-sqrt', got 'sqrt'"),
        ],
    )
    def test_validation(self, kwargs, pattern):
        with pytest.raises(ValueError, match=pattern):
            schedules.WSD(**kwargs)


class TestCycleEnds:
    @pytest.mark.parametrize("cls", [Triangular, Triangular2, ExpRange])
    def test_triangular_family(self, cls):
        assert cls(step_size=100).cycle_ends(steps_per_epoch=SPE, total_steps=1000) == [200, 400, 600, 800, 1000]
        assert cls(step_epochs=2.5).cycle_ends(steps_per_epoch=30, total_steps=470) == [150, 300, 450]

    def test_triangular_ends_at_base(self):
        optimizer = make_optimizer()
        lrs, _ = record(optimizer, build(Triangular(step_size=25), optimizer), 200)
        ends = Triangular(step_size=25).cycle_ends(steps_per_epoch=SPE, total_steps=200)
        assert ends == [50, 100, 150, 200]
        assert [lrs[e][0] for e in ends] == pytest.approx([BASE] * 4, rel=1e-12)
        assert lrs[25][0] == pytest.approx(MAX, rel=1e-12)

    @pytest.mark.parametrize(
        "spec", [Constant(), OneCycle(), StepDecay(), ExponentialDecay(), Cosine()], ids=lambda s: type(s).__name__
    )
    def test_no_cycles(self, spec):
        assert spec.cycle_ends(steps_per_epoch=SPE, total_steps=777) == [777]


class TestAnnealingValues:
    def test_step_decay_last_drop_lands_on_base(self):
        optimizer = make_optimizer()
        lrs, _ = record(optimizer, build(StepDecay(step_size=100), optimizer, total=400), 400)
        # training steps 0..399 see the drops at 100, 200, 300: gamma = (1e-3 / 0.1) ** (1 / 3)
        assert lrs[0][0] == MAX and lrs[99][0] == MAX
        assert lrs[100][0] == pytest.approx(0.1 * 0.01 ** (1 / 3), rel=1e-12)
        assert [lr[0] for lr in lrs[300:400]] == pytest.approx([BASE] * 100, rel=1e-12)

    def test_exponential_and_cosine_reach_base_at_the_end(self):
        for spec in (ExponentialDecay(), Cosine()):
            optimizer = make_optimizer()
            lrs, _ = record(optimizer, build(spec, optimizer, total=300), 300)
            assert lrs[0][0] == MAX and lrs[300][0] == pytest.approx(BASE, rel=1e-12)
        assert lrs[150][0] == pytest.approx((BASE + MAX) / 2, rel=1e-12)

    def test_exp_range_derived_gamma_halves_each_cycle(self):
        optimizer = make_optimizer()
        lrs, _ = record(optimizer, build(ExpRange(step_size=40), optimizer), 200)
        peaks = [lrs[s][0] - BASE for s in (40, 120, 200)]
        assert peaks[1] / peaks[0] == pytest.approx(0.5, rel=1e-9)
        assert peaks[2] / peaks[1] == pytest.approx(0.5, rel=1e-9)


class TestMultipleParamGroups:
    @pytest.mark.parametrize("spec", ALL_SPECS)
    def test_ratio_holds_every_step(self, spec):
        two = make_optimizer(groups=2)
        lrs, _ = record(two, build(spec, two, [BASE, 10 * BASE], [MAX, 10 * MAX], total=SHORT), SHORT)
        one = make_optimizer()
        single, _ = record(one, build(spec, one, total=SHORT), SHORT)
        assert_close([lr[1] for lr in lrs], [10 * lr[0] for lr in lrs])
        assert_close([lr[0] for lr in lrs], [lr[0] for lr in single])

    @pytest.mark.parametrize("cls", [OneCycle, StepDecay, ExponentialDecay])
    def test_one_shared_factor_needs_proportional_bounds(self, cls):
        optimizer = make_optimizer(groups=2)
        with pytest.raises(ValueError, match=r"ratio.*\[100\.0, 10\.0\]"):
            build(cls(), optimizer, [BASE, 10 * BASE], [MAX, MAX])

    def test_cosine_keeps_a_base_per_group(self):
        optimizer = make_optimizer(groups=2)
        lrs, _ = record(optimizer, build(Cosine(), optimizer, [BASE, 0.05], [MAX, MAX], total=100), 100)
        assert lrs[0] == [MAX, MAX] and lrs[100] == pytest.approx([BASE, 0.05], rel=1e-12)


class TestStateDict:
    @pytest.mark.parametrize("spec", ALL_SPECS)
    @pytest.mark.parametrize("k", [1, 137])
    def test_resume_continues_exactly(self, spec, k):
        optimizer = make_optimizer(groups=2)
        bounds = ([BASE, 10 * BASE], [MAX, 10 * MAX])
        scheduler = build(spec, optimizer, *bounds, total=SHORT)
        first, _ = record(optimizer, scheduler, k)
        buffer = io.BytesIO()
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
        rest, rest_moms = record(optimizer, scheduler, SHORT - k)

        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)  # plain data only, as in a checkpoint
        fresh = make_optimizer(groups=2, lr=0.7)
        resumed = build(spec, fresh, *bounds, total=SHORT)
        fresh.load_state_dict(saved["optimizer"])
        resumed.load_state_dict(saved["scheduler"])
        again, again_moms = record(fresh, resumed, SHORT - k)
        assert_close(again, rest, rtol=0)
        assert_close(again_moms, rest_moms, rtol=0)
        assert rest[0] == first[-1]

    @pytest.mark.parametrize("spec", [SGDR(cycle_steps=30, cycle_mult=1.5, warmup_steps=5), Cosine()])
    def test_pure_schedules_resume_from_scheduler_state_alone(self, spec):
        optimizer = make_optimizer()
        scheduler = build(spec, optimizer, total=SHORT)
        record(optimizer, scheduler, 77)
        state = copy.deepcopy(scheduler.state_dict())
        rest, _ = record(optimizer, scheduler, 100)
        fresh = make_optimizer()
        resumed = build(spec, fresh, total=SHORT)
        resumed.load_state_dict(state)
        again = [resumed.get_lr()]  # the LR is a pure function of the loaded step count
        for _ in range(100):
            fresh.step()
            resumed.step()
            again.append([g["lr"] for g in fresh.param_groups])
        assert again == rest


class TestStaleInitialLR:
    @pytest.mark.parametrize("spec", ALL_SPECS)
    def test_previous_scheduler_is_ignored(self, spec):
        optimizer = make_optimizer(groups=2)
        old = CyclicLR(optimizer, base_lr=0.5, max_lr=1.0, step_size_up=7, cycle_momentum=False)
        record(optimizer, old, 3)
        assert optimizer.param_groups[0]["initial_lr"] == 0.5
        bounds = ([BASE, 10 * BASE], [MAX, 10 * MAX])
        ours, _ = record(optimizer, build(spec, optimizer, *bounds, total=SHORT), SHORT)
        clean = make_optimizer(groups=2)
        expected, _ = record(clean, build(spec, clean, *bounds, total=SHORT), SHORT)
        assert_close(ours, expected, rtol=0)
        fresh = make_optimizer(groups=2)
        build(spec, fresh, *bounds, total=SHORT)
        starts = [g["initial_lr"] for g in fresh.param_groups]
        stale = make_optimizer(groups=2)
        CyclicLR(stale, base_lr=0.5, max_lr=1.0, step_size_up=7, cycle_momentum=False)
        build(spec, stale, *bounds, total=SHORT)
        assert [g["initial_lr"] for g in stale.param_groups] == starts
        assert starts == pytest.approx(expected[0], rel=1e-12)


def _build_error(spec, optimizer=None, base=BASE, peak=MAX, total=TOTAL, spe=SPE):
    return lambda: spec.build(optimizer or make_optimizer(), base, peak, steps_per_epoch=spe, total_steps=total)


class TestValidation:
    @pytest.mark.parametrize(
        "make,pattern",
        [
            (lambda: SGDR(cycle_mult=0), r"cycle_mult must be > 0, got 0"),
            (lambda: SGDR(cycle_mult=-1.0), r"cycle_mult must be > 0, got -1\.0; use 1"),
            (lambda: SGDR(cycle_decay=1.5), r"cycle_decay must be in \(0, 1\], got 1\.5"),
            (lambda: SGDR(cycle_epochs=0), r"cycle_epochs must be > 0 or None, got 0"),
            (lambda: SGDR(cycle_steps=0), r"cycle_steps must be an integer >= 1 or None, got 0"),
            (lambda: SGDR(warmup_steps=-2), r"warmup_steps must be an integer >= 0 or None, got -2"),
            (lambda: SGDR(warmup_epochs=-1.0), r"warmup_epochs must be >= 0, got -1\.0"),
            (lambda: SGDR(floor=1.0), r"floor must be in \[0, 1\) \(a fraction of max_lr\) or None, got 1\.0; use 0"),
            (lambda: SGDR(eta_min=-0.1), r"eta_min must be an LR >= 0 or None, got -0\.1"),
            (lambda: SGDR(restart_warmup=1.0), r"restart_warmup must be in \[0, 1\) \(a fraction of each cycle\), got 1\.0"),
            (lambda: OneCycle(pct_start=1.5), r"pct_start must be in \(0, 1\), got 1\.5"),
            (lambda: OneCycle(pct_start=0.0), r"pct_start must be in \(0, 1\), got 0\.0"),
            (lambda: OneCycle(pct_start=0.6, three_phase=True), r"pct_start must be < 0\.5 .*got 0\.6"),
            (lambda: OneCycle(anneal_strategy="exp"), r"anneal_strategy must be 'cos' or 'linear', got 'exp'"),
            (lambda: OneCycle(final_div_factor=0.5), r"final_div_factor must be >= 1, got 0\.5"),
            (lambda: OneCycle(base_momentum=0.99), r"base_momentum \(0\.99\) must be <= max_momentum \(0\.95\)"),
            (lambda: OneCycle(max_momentum=1.0), r"max_momentum must be in \[0, 1\), got 1\.0"),
            (lambda: Triangular(step_epochs=0), r"Triangular: step_epochs must be > 0 or None, got 0"),
            (lambda: Triangular2(step_size=0), r"Triangular2: step_size must be an integer >= 1 or None, got 0"),
            (lambda: Triangular(step_size=2.5), r"step_size must be an integer >= 1 or None, got 2\.5"),
            (lambda: ExpRange(gamma=1.2), r"ExpRange: gamma must be in \(0, 1\] or None, got 1\.2"),
            (lambda: ExpRange(cycle_decay=0), r"cycle_decay must be in \(0, 1\], got 0"),
            (lambda: StepDecay(step_epochs=-1), r"StepDecay: step_epochs must be > 0, got -1"),
            (lambda: StepDecay(gamma=0), r"StepDecay: gamma must be in \(0, 1\] or None, got 0"),
            (lambda: ExponentialDecay(gamma=2.0), r"ExponentialDecay: gamma must be in \(0, 1\] or None, got 2\.0"),
            (lambda: Constant(position=1.5), r"Constant: position must be in \[0, 1\], got 1\.5"),
            (lambda: Constant(position=float("nan")), r"position must be in \[0, 1\], got nan"),
        ],
    )
    def test_bad_shape_parameters(self, make, pattern):
        with pytest.raises(ValueError, match=pattern):
            make()

    @pytest.mark.parametrize("spec", ALL_SPECS)
    def test_bad_bounds(self, spec):
        with pytest.raises(ValueError, match=r"max_lr \(0\.001\) must be >= base_lr \(0\.01\)"):
            _build_error(spec, base=0.01, peak=0.001)()
        with pytest.raises(ValueError, match=r"base_lr must be > 0, got 0\.0"):
            _build_error(spec, base=0.0)()
        with pytest.raises(ValueError, match=r"max_lr \(0\.1\) must be >= base_lr \(1\.0\) in param group 1"):
            _build_error(spec, make_optimizer(groups=2), base=[BASE, 1.0], peak=[MAX, 0.1])()
        with pytest.raises(ValueError, match=r"base_lr has 3 values but the optimizer has 2 param groups"):
            _build_error(spec, make_optimizer(groups=2), base=[BASE] * 3)()
        with pytest.raises(ValueError, match=r"steps_per_epoch must be an integer >= 1, got 0"):
            _build_error(spec, spe=0)()

    @pytest.mark.parametrize(
        "spec", [OneCycle(), Cosine(), StepDecay(), ExponentialDecay(), schedules.WSD()], ids=lambda s: type(s).__name__
    )
    def test_total_steps_required(self, spec):
        with pytest.raises(ValueError, match=rf"{type(spec).__name__} needs total_steps, got None; set max_epochs"):
            _build_error(spec, total=None)()

    @pytest.mark.parametrize(
        "spec",
        [Constant(), Triangular(step_epochs=2), ExpRange(step_size=7), SGDR(cycle_epochs=1), StepDecay(gamma=0.5),
         ExponentialDecay(gamma=0.99)],
        ids=lambda s: type(s).__name__,
    )
    def test_total_steps_optional(self, spec):
        assert isinstance(_build_error(spec, total=None)(), LRScheduler)

    @pytest.mark.parametrize("spec", [Triangular(), Triangular2(), ExpRange(), SGDR()], ids=lambda s: type(s).__name__)
    def test_cycles_fitted_to_the_run_need_its_length(self, spec):
        with pytest.raises(ValueError, match=rf"{type(spec).__name__}: without .* the run has no end; set max_epochs"):
            _build_error(spec, total=None)()


class TestFittedCycles:
    """With no cycle length given, ``num_cycles`` cycles end exactly at the last step."""

    @pytest.mark.parametrize("cls", [Triangular, Triangular2, ExpRange])
    @pytest.mark.parametrize("num_cycles, total", [(1, 800), (2, 800), (3, 90)])
    def test_clr_half_cycle(self, cls, num_cycles, total):
        spec = cls(num_cycles=num_cycles)
        assert spec.half_cycle(40, total) == total / (2 * num_cycles)
        assert spec.cycle_ends(steps_per_epoch=40, total_steps=total) == [
            k * total // num_cycles for k in range(1, num_cycles + 1)
        ]

    @pytest.mark.parametrize("spec", [Triangular(), SGDR()], ids=["triangular", "sgdr"])
    def test_the_run_ends_annealed(self, spec):
        optimizer = make_optimizer()
        scheduler = build(spec, optimizer, total=800, spe=40)
        lrs = []
        for _ in range(800):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert lrs[-1] < BASE + 0.005 * (MAX - BASE)  # the last training step runs at the bottom of a cycle
        assert max(lrs) == pytest.approx(MAX)

    @pytest.mark.parametrize("num_cycles, mult, ends", [(2, 2.0, [267, 800]), (3, 2.0, [115, 343, 800]),
                                                        (4, 1.0, [200, 400, 600, 800])])
    def test_sgdr_cycle_ends(self, num_cycles, mult, ends):
        spec = SGDR(num_cycles=num_cycles, cycle_mult=mult)
        assert spec.first_cycle(40, 800) == pytest.approx(800 / sum(mult**i for i in range(num_cycles)))
        assert spec.cycle_ends(steps_per_epoch=40, total_steps=800) == ends

    def test_sgdr_warmup_is_outside_the_cycles(self):
        spec = SGDR(num_cycles=2, cycle_mult=1.0, warmup_steps=100)
        assert spec.cycle_ends(steps_per_epoch=40, total_steps=900) == [500, 900]

    @pytest.mark.parametrize("cls, value", [(SGDR, 0), (Triangular, 0), (ExpRange, 1.5)])
    def test_num_cycles_validated(self, cls, value):
        with pytest.raises(ValueError, match=rf"{cls.__name__}: num_cycles must be an integer >= 1, got {value}"):
            cls(num_cycles=value)

    @pytest.mark.parametrize("spec", ALL_SPECS)
    def test_numpy_scalars_accepted(self, spec):
        np = pytest.importorskip("numpy")
        optimizer = make_optimizer()
        spec.build(
            optimizer, np.float32(BASE), np.float64(MAX), steps_per_epoch=np.int64(SPE), total_steps=np.int64(SHORT)
        )
        reference = make_optimizer()
        build(spec, reference, total=SHORT)
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
            [g["lr"] for g in reference.param_groups], rel=1e-6
        )

    @pytest.mark.parametrize("cls", [Triangular, Triangular2, ExpRange])
    def test_cycle_momentum_needs_momentum(self, cls):
        with pytest.raises(ValueError, match=r"cycle_momentum=True but Adagrad has no momentum or betas"):
            _build_error(cls(cycle_momentum=True), make_optimizer(kind="adagrad"))()

    def test_step_counts(self):
        with pytest.raises(ValueError, match=r"SGDR: the first cycle is 0\.5 optimizer steps"):
            _build_error(SGDR(cycle_epochs=0.5), spe=1)()
        with pytest.raises(ValueError, match=r"pct_start=0\.3 x total_steps=3 leaves no warm-up"):
            _build_error(OneCycle(pct_start=0.3), total=3)()
        with pytest.raises(ValueError, match=r"total_steps must be an integer >= 1 or None, got 0"):
            _build_error(Triangular(), total=0)()


@dataclass
class HalfWay(Schedule):
    """A spec written against the base class alone: a shape and a pure LR function."""

    share: float = 0.5

    lr_at = staticmethod(lambda step, base_lr, max_lr, total_steps, share: max_lr if step < share * total_steps
                         else base_lr)

    def shape(self, steps_per_epoch: int, total_steps: int | None) -> dict[str, Any]:
        return {"total_steps": total_steps, "share": self.share}


class TestBaseClass:
    def test_a_shape_and_a_function_make_a_scheduler(self):
        optimizer = make_optimizer(groups=2)
        CyclicLR(optimizer, base_lr=0.5, max_lr=1.0, step_size_up=7, cycle_momentum=False)  # stale initial_lr
        scheduler = build(HalfWay(), optimizer, [BASE, 10 * BASE], [MAX, 10 * MAX], total=10)
        lrs, _ = record(optimizer, scheduler, 10)
        assert lrs == [[MAX, 10 * MAX]] * 5 + [[BASE, 10 * BASE]] * 6
        assert [g["initial_lr"] for g in optimizer.param_groups] == [MAX, 10 * MAX]
        buffer = io.BytesIO()
        torch.save(scheduler.state_dict(), buffer)  # plain data: the function stays out
        buffer.seek(0)
        assert "lr_at" not in torch.load(buffer, weights_only=True)

    def test_the_base_class_checks_bounds_and_steps(self):
        with pytest.raises(ValueError, match=r"HalfWay: max_lr \(0\.001\) must be >= base_lr \(0\.01\)"):
            _build_error(HalfWay(), base=0.01, peak=0.001)()
        with pytest.raises(ValueError, match=r"HalfWay: total_steps must be an integer >= 1 or None, got 0"):
            _build_error(HalfWay(), total=0)()


class TestRegistry:
    def test_names(self):
        assert set(SCHEDULES) == {
            "constant", "triangular", "triangular2", "exp_range", "sgdr", "one_cycle", "step", "exp_decay", "cosine",
            "wsd",
        }
        assert schedules.SGDR is SGDR and SCHEDULES["sgdr"] is SGDR and SCHEDULES["wsd"] is schedules.WSD

    @pytest.mark.parametrize("name", sorted(SCHEDULES))
    def test_defaults_build_a_scheduler(self, name):
        spec = SCHEDULES[name]()
        assert isinstance(spec, Schedule)
        optimizer = make_optimizer()
        assert isinstance(build(spec, optimizer), LRScheduler)

    def test_hydra_instantiate(self):
        from hydra.utils import instantiate

        spec = instantiate({"_target_": "lightning_clr.schedules.SGDR", "cycle_mult": 1.5, "cycle_steps": 10})
        assert spec == SGDR(cycle_steps=10, cycle_mult=1.5)
