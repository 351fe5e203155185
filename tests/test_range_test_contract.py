"""The range test's contract: one readability decision, a ceiling on the sweep, a result that is a record,
and errors that name the setting to change."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
from typing import ClassVar

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import BackboneFinetuning, StochasticWeightAveraging
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, TensorDataset

from lightning_clr import LRRangeTest, RangeTestResult, schedules
from lightning_clr._compat import FIT_WEIGHTS_ONLY
from lightning_clr.models import Classifier
from lightning_clr.range_test import readability, resume, settings
from lightning_clr.range_test.readability import EXTEND, FALLBACK, READ, RERUN, Policy, decide, extension
from lightning_clr.range_test.sweep import sweep_lrs
from tests.helpers import LRRecorder, tiny_data, tiny_model, tiny_trainer
from tests.test_in_projects import Backboned


class TestNamedSettings:
    def test_every_argument_is_kept_as_a_named_attribute(self):
        params = [p for p in inspect.signature(LRRangeTest.__init__).parameters.values()
                  if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
        finder = LRRangeTest()
        normalised = {"schedule": schedules.WSD(), "rule_options": {}, "end_lr": settings.DEFAULT_END_LR}
        for p in params:
            assert getattr(finder, f"_{p.name}") == normalised.get(p.name, p.default), p.name
        assert finder._extendable and not LRRangeTest(end_lr=settings.DEFAULT_END_LR)._extendable
        assert not hasattr(finder, "_s") and finder.schedule is finder._schedule

    def test_values_are_normalised_where_they_are_checked(self):
        finder = LRRangeTest(start_lr=1, end_lr=10, bounds=[1, 2], group_scales=[1, 4], rule_options=None)
        assert (finder._start_lr, finder._end_lr) == (1.0, 10.0) and isinstance(finder._start_lr, float)
        assert finder._bounds == (1.0, 2.0) and finder._group_scales == [1.0, 4.0] and finder._rule_options == {}

    @pytest.mark.parametrize("check, args, message", [
        (settings.check_lr, ("start_lr", 0.0, "fix it"), r"start_lr must be a finite number in \(0, 10000\], got 0.0; fix it"),
        (settings.check_lr, ("start_lr", True, "fix it"), "got True"),
        (settings.check_end_lr, (1e-3, 1e-2), r"end_lr \(0.001\) must be a finite number above start_lr \(0.01\)"),
        (settings.check_count, ("num_steps", 5, 20, "200 is the default", " to read a curve"),
         "num_steps must be an integer >= 20 to read a curve, got 5; 200 is the default"),
        (settings.check_count, ("max_reruns", 2.0, 0, "0 never reruns"), "max_reruns must be an integer >= 0, got 2.0"),
        (settings.check_ema_beta, ("0.5",), r"ema_beta must be in \[0, 1\), got 0.5"),
        (settings.check_min_fall, (-0.1,), r"min_fall must be a fraction in \[0, 1\), got -0.1"),
        (settings.check_choice, ("metric", "acc", settings.METRICS), "metric must be one of .*, got 'acc'"),
        (settings.check_sweep_share, (1.5,), (r"sweep_share must be a fraction in \(0, 1\] or None, got 1.5; 0.5 lets the "
                                               r"sweep take at most half the run's optimizer steps, None \(the default\) "
                                               "never shortens it")),
        (settings.check_sweep_share, (0,), "sweep_share must be a fraction in .*, got 0;"),
        (settings.check_sweep_share, (True,), "sweep_share must be a fraction in .*, got True;"),
        (settings.check_sweep_share, ("0.5",), "sweep_share must be a fraction in .*, got '0.5';"),
    ])
    def test_each_check_names_the_value_and_the_fix(self, check, args, message):
        with pytest.raises(ValueError, match=message):
            check(*args)

    def test_checks_return_what_they_accept(self):
        assert settings.check_count("val_batches", 3, 1, "") == 3
        assert settings.check_divergence_threshold(4) == 4.0 and settings.check_divergence_threshold(None) is None
        assert settings.check_bounds((0.01, 0.1)) == (0.01, 0.1) and settings.check_bounds(None) is None
        assert settings.check_sweep_share(1) == 1.0 and settings.check_sweep_share(None) is None

    @pytest.mark.parametrize("share, total, cap", [(0.5, 40, 20), (0.5, 61, 30), (0.5, 1000, 500), (0.5, 28, 20),
                                                   (1.0, 7, 20), (None, 1000, None), (0.5, None, None)])
    def test_the_sweep_cap_is_the_share_of_the_run_but_never_under_min_steps(self, share, total, cap):
        assert settings.sweep_cap(share, total) == cap

    @pytest.mark.parametrize("share, total, taken, note", [
        (0.5, 60, 30, settings.Note("the run has 60 optimizer steps; the sweep takes 30 (sweep_share=0.5).")),
        (0.5, 28, 20, settings.Note("the sweep takes 20 steps, the fewest a curve can be read from: 0.71x the run's "
                                    "28 (sweep_share=0.5); bounds=(base_lr, max_lr) skips the sweep.", warn=True)),
        (None, 88, 200, settings.Note("the sweep takes 200 steps, 2.3x the run's 88 optimizer steps; sweep_share=0.5 "
                                      "would cap it at 44 (coarser bounds), and bounds=(base_lr, max_lr) skips it.")),
        (None, 30, 200, settings.Note("the sweep takes 200 steps, 6.7x the run's 30 optimizer steps; sweep_share=0.5 "
                                      "would cap it at 20 (coarser bounds), and bounds=(base_lr, max_lr) skips it.")),
        (0.5, 1000, 200, None), (None, 200, 200, None), (None, 1000, 200, None), (0.5, None, 200, None)])
    def test_what_is_said_about_the_sweeps_length(self, share, total, taken, note):
        assert settings.cap_note(share, total, asked=200, taken=taken) == note
        with pytest.raises(TypeError, match="schedule must be a lightning_clr.schedules spec, got str"):
            settings.check_schedule("sgdr")


LRS = list(np.logspace(-4, 0, 41))  # 0.1 decade apart


def policy(**kwargs) -> Policy:
    values = {"mode": "exponential", "num_steps": 41, "max_extensions": 2, "min_fall": 0.1, "max_reruns": 2,
              "ceiling": math.inf}
    return Policy(**{**values, **kwargs})


def valley(depth: float) -> list[float]:
    """A smooth loss that falls by ``depth`` (of its top, 1) from lr 1e-4 to 1e-2, and rises as much to lr 1."""
    x = np.log10(LRS) + 2
    return list(1 - depth + depth * (x / 2) ** 2)


def falling() -> list[float]:
    """A loss still falling steeply at the last LR."""
    return list(2.0 - 1.5 * np.asarray(LRS) ** 0.5)


class TestDecide:
    def test_a_curve_that_turned_is_read(self):
        decision = decide(LRS, valley(0.5), extended=0, reruns=0, stop="completed", policy=policy())
        assert decision.action == READ and decision.lrs == () and decision.fall is None
        assert decision.reason == "the loss turns at lr 0.01"

    def test_a_curve_still_falling_at_its_end_is_extended_by_a_decade(self):
        decision = decide(LRS, falling(), extended=0, reruns=0, stop="completed", policy=policy())
        assert decision.action == EXTEND
        np.testing.assert_allclose(decision.lrs, 10 ** (np.arange(1, 11) / 10), rtol=1e-9)  # ten more 0.1 decades
        assert decision.reason == "the loss still falls at the last LR (1); sweeping on to lr 10"

    @pytest.mark.parametrize("num_steps, cap, planned, reruns", [(20, 20, 20, 0), (20, 39, 20, 0), (20, 40, 20, 1),
                                                                 (20, 80, 20, 2), (20, 1000, 20, 2), (200, 500, 200, 1),
                                                                 (200, 30, 30, 0), (200, None, 200, 2)])
    def test_a_cap_shortens_the_sweep_and_keeps_the_reruns_that_fit(self, num_steps, cap, planned, reruns):
        capped = readability.capped(policy(num_steps=num_steps), cap)
        assert (capped.num_steps, capped.max_reruns, capped.max_steps) == (planned, reruns, cap)

    def test_an_extension_stops_at_max_steps(self):
        decision = decide(LRS, falling(), extended=0, reruns=0, stop="completed", policy=policy(max_steps=45))
        assert decision.action == EXTEND
        np.testing.assert_allclose(decision.lrs, 10 ** (np.arange(1, 5) / 10), rtol=1e-9)  # 41 + 4 points
        capped = decide(LRS, falling(), extended=0, reruns=0, stop="completed", policy=policy(max_steps=41))
        assert capped.action == READ

    def test_a_linear_sweep_is_extended_by_half_its_steps(self):
        lrs = [0.01 * k for k in range(1, 21)]
        losses = [2.0 - lr for lr in lrs]
        decision = decide(lrs, losses, extended=0, reruns=0, stop="completed", policy=policy(mode="linear", num_steps=20))
        assert decision.action == EXTEND
        np.testing.assert_allclose(decision.lrs, [0.2 + 0.01 * k for k in range(1, 11)], rtol=1e-9)

    @pytest.mark.parametrize("extended, stop", [(2, "completed"), (0, "diverged"), (0, "non-finite loss")])
    def test_no_extension_past_max_extensions_or_after_a_stop(self, extended, stop):
        decision = decide(LRS, falling(), extended=extended, reruns=0, stop=stop, policy=policy())
        assert decision.action == READ  # the rules read the curve as it is

    def test_a_shallow_fall_is_swept_again_with_twice_the_steps(self):
        decision = decide(LRS, valley(0.04), extended=0, reruns=0, stop="completed", policy=policy())
        assert decision.action == RERUN
        assert 0.035 < decision.fall < 0.04  # the fall of the curve as the rules smooth it
        assert decision.reason == ("the loss fell by only 3.9% in 41 steps (min_fall=0.1), too little training to "
                                   "read bounds from; sweeping again with 82 steps.")

    @pytest.mark.parametrize("kwargs", [{"min_fall": 0.0}, {"min_fall": 0.03}, {"max_reruns": 1}])
    def test_min_fall_and_max_reruns_end_the_reruns(self, kwargs):
        decision = decide(LRS, valley(0.04), extended=0, reruns=1, stop="completed", policy=policy(**kwargs))
        assert decision.action == READ

    def test_a_flat_curve_is_extended_then_falls_back(self):
        flat = [1.0] * len(LRS)
        first = decide(LRS, flat, extended=0, reruns=0, stop="completed", policy=policy())
        assert first.action == EXTEND and first.reason.startswith("flat curve: the loss falls by 0")
        last = decide(LRS, flat, extended=2, reruns=0, stop="completed", policy=policy())
        assert last.action == FALLBACK and last.reason.startswith("flat curve: the loss falls by 0")
        assert last.lrs == () and last.fall is None

    @pytest.mark.parametrize("count, reason", [(0, "no point was recorded"),
                                               (2, "only 2 finite point(s), fewer than min_points=5")])
    def test_too_few_points_fall_back(self, count, reason):
        decision = decide(LRS[:count], falling()[:count], extended=0, reruns=0, stop="completed", policy=policy())
        assert decision == dataclasses.replace(decision, action=FALLBACK, reason=reason)

    def test_a_decision_is_frozen(self):
        decision = decide(LRS, valley(0.5), extended=0, reruns=0, stop="completed", policy=policy())
        with pytest.raises(dataclasses.FrozenInstanceError):
            decision.action = EXTEND  # type: ignore[misc]


class TestExtension:
    def test_stops_at_the_ceiling(self):
        assert extension([0.5, 1.0], "linear", 10, ceiling=3.0) == (1.5, 2.0, 2.5, 3.0)
        grid = extension([10 ** -0.1, 1.0], "exponential", 41, ceiling=10 ** 0.55)
        np.testing.assert_allclose(grid, 10 ** (np.arange(1, 6) / 10), rtol=1e-9)  # 0.6 is above the ceiling

    def test_nothing_above_the_ceiling_means_no_extension(self):
        decision = decide(LRS, falling(), extended=0, reruns=0, stop="completed", policy=policy(ceiling=1.0))
        assert decision.action == READ


class SlowQuadratic(L.LightningModule):
    """A loss of ``1 + (scale * w - 1)^2 / 2`` from w = 0 under plain SGD: stable up to lr ``2 / scale^2``."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return 1.0 + 0.5 * (self.scale * self.w - 1.0) ** 2 + 0.0 * batch[0].sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(8, 1)), batch_size=4)


class TestCeiling:
    def fit(self, tmp_path, model, run_steps=1, **kwargs):
        finder = LRRangeTest(schedules.Constant(), progress_bar=False, **{"sweep_share": None, **kwargs})
        tiny_trainer(tmp_path, callbacks=[finder], max_steps=run_steps, max_epochs=-1).fit(model)
        return finder.result

    def test_a_user_set_end_lr_is_never_exceeded(self, tmp_path):
        r = self.fit(tmp_path, SlowQuadratic(0.3), num_steps=40, end_lr=1.0, min_fall=0.0)
        assert r.losses[-1] < r.losses[-2] < r.losses[0]  # still falling at its end: the default would extend
        assert max(r.lrs) == 1.0 and r.extended == 0 and len(r.lrs) == 40
        assert r.lrs == sweep_lrs(1e-5, 1.0, 40, "exponential")

    @pytest.mark.parametrize("end_lr", [100, 100.0])
    def test_an_end_lr_of_100_given_is_a_ceiling_the_default_end_is_not(self, end_lr, tmp_path):
        planned = sweep_lrs(1e-5, settings.DEFAULT_END_LR, 20, "exponential")
        given = self.fit(tmp_path / "given", SlowQuadratic(0.01), num_steps=20, end_lr=end_lr, min_fall=0.0)
        assert given.losses[-1] < given.losses[-2] < given.losses[0]  # still falling at 100
        assert given.extended == 0 and max(given.lrs) <= 100 and given.lrs == planned
        default = self.fit(tmp_path / "default", SlowQuadratic(0.01), num_steps=20, min_fall=0.0)
        assert default.lrs[:20] == planned and default.extended == 2 and max(default.lrs) > 100

    def test_the_default_end_is_extended_but_never_above_max_lr(self, tmp_path):
        r = self.fit(tmp_path, SlowQuadratic(0.01), num_steps=20)  # flat up to lr 100
        planned = sweep_lrs(1e-5, settings.DEFAULT_END_LR, 20, "exponential")
        assert r.lrs[:20] == planned and r.extended == 2
        step = math.log(planned[-1] / planned[-2])  # 3 steps a decade; the sixth extra step (1.6e4) is cut
        np.testing.assert_allclose(r.lrs[20:], [100 * math.exp(step * k) for k in range(1, 6)], rtol=1e-9)
        assert 5e3 < max(r.lrs) <= settings.MAX_LR

    @pytest.mark.parametrize("run_steps, extra", [(1, 0), (50, 5)])
    def test_extensions_stay_within_the_share_of_the_run(self, run_steps, extra, tmp_path):
        r = self.fit(tmp_path, SlowQuadratic(0.01), run_steps, num_steps=20, sweep_share=0.5)  # flat up to lr 100
        assert r.lrs[:20] == sweep_lrs(1e-5, settings.DEFAULT_END_LR, 20, "exponential")
        # 25 points in a 50-step run at 0.5: a decade (3 points), then 2 of the next decade's 3
        assert len(r.lrs) == 20 + extra and r.extended == (2 if extra else 0)

    def test_the_first_and_last_planned_lrs_are_exact(self):
        for mode in ("exponential", "linear"):
            for start, end, n in ((1e-5, 1.0, 40), (3e-4, 0.7, 23), (1e-3, 10.0, 200)):
                lrs = sweep_lrs(start, end, n, mode)
                assert (lrs[0], lrs[-1], len(lrs)) == (start, end, n) and max(lrs) == end


class ResultProbe(L.Callback):
    """Copies the finder's result (and its dict) in ``on_fit_start``, right after the finder's own."""

    def __init__(self, finder: LRRangeTest) -> None:
        self.finder = finder

    def on_fit_start(self, trainer, pl_module):
        self.result = copy.deepcopy(self.finder.result)
        self.state = self.finder.result.to_dict()


class TestResultIsARecord:
    FINDER: ClassVar[dict] = {"num_steps": 20, "start_lr": 1e-4, "end_lr": 1.0, "progress_bar": False}

    def test_it_is_frozen(self):
        result = RangeTestResult([1e-3, 1e-2], [1.0, 0.5], [1.0, 0.5], 1e-3, 1e-2, "smith", "completed")
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.group_ratios = [1.0, 2.0]  # type: ignore[misc]
        assert RangeTestResult.from_dict(result.to_dict()) == result

    def test_stochastic_weight_averaging_leaves_it_as_it_was(self, tmp_path):
        finder = LRRangeTest(schedules.Triangular(), **self.FINDER)
        probe, recorder = ResultProbe(finder), LRRecorder()
        swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2, annealing_epochs=1)  # from epoch index 1
        trainer = tiny_trainer(tmp_path, callbacks=[finder, probe, swa, recorder], max_epochs=3, limit_train_batches=4)
        trainer.fit(tiny_model(), datamodule=tiny_data())
        assert finder.result == probe.result and finder.result.to_dict() == probe.state
        assert finder.result.group_ratios == [1.0]
        lrs = [group[0] for group in recorder.lrs]
        assert lrs[0] == pytest.approx(finder.result.base_lr) and lrs[1] > lrs[0]  # the triangle, then SWA's LR
        assert lrs[4:8] == [lrs[4]] * 4 and lrs[8:] == [pytest.approx(0.05)] * 4  # SWALR steps once an epoch
        assert finder._group_ratios[0] != 1.0  # the live ratio followed SWA's LR

    def test_backbone_finetuning_leaves_it_as_it_was_and_the_new_group_trains(self, tmp_path):
        finder = LRRangeTest(schedules.SGDR(), **self.FINDER)
        probe, recorder = ResultProbe(finder), LRRecorder()
        tuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1, should_align=False)
        trainer = tiny_trainer(tmp_path, callbacks=[tuning, finder, probe, recorder], max_epochs=2,
                               limit_train_batches=4)
        trainer.fit(Backboned(), datamodule=tiny_data())
        assert finder.result == probe.result and finder.result.to_dict() == probe.state
        assert finder.result.group_ratios == [1.0]
        assert [len(groups) for groups in recorder.lrs] == [1] * 4 + [2] * 4  # the unfrozen backbone trains
        assert [b / a for a, b in recorder.lrs[4:]] == [pytest.approx(0.1, rel=1e-6)] * 4
        assert finder._group_ratios == [1.0, pytest.approx(0.1, rel=1e-6)]

    def test_a_checkpoint_keeps_the_record_and_the_live_ratios(self, tmp_path):
        finder = LRRangeTest(schedules.SGDR(), **self.FINDER)
        tuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1, should_align=False)
        tiny_trainer(tmp_path, callbacks=[tuning, finder], max_epochs=2, limit_train_batches=4).fit(
            Backboned(), datamodule=tiny_data())
        state = torch.load(_saved(finder.state_dict(), tmp_path), weights_only=True)
        again = LRRangeTest(schedules.SGDR(), **self.FINDER)
        again.load_state_dict(state)
        assert again.result == finder.result and again.result.group_ratios == [1.0]
        assert again._group_ratios == finder._group_ratios and len(again._group_ratios) == 2
        assert again.restored


def _saved(state: dict, tmp_path) -> str:
    path = str(tmp_path / "state.pt")
    torch.save(state, path)
    return path


class Counted(Classifier):
    """A classifier that counts its ``training_step`` calls."""

    calls: ClassVar[list[int]] = []

    def training_step(self, batch, batch_idx):
        Counted.calls.append(batch_idx)
        return super().training_step(batch, batch_idx)


def _loader(n: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 40, generator=g), torch.randint(0, 4, (n,), generator=g)),
                      batch_size=16)


class TestValidationMetric:
    @pytest.mark.parametrize("fit_kwargs, trainer_kwargs, cause", [
        ({"val_dataloaders": _loader(0)}, {}, "the validation loader yielded no batch"),
        ({}, {}, "the fit has no validation loader"),
        ({"val_dataloaders": _loader(32)}, {"limit_val_batches": 0}, "limit_val_batches=0"),
    ], ids=["empty loader", "no loader", "limit 0"])
    def test_val_loss_without_validation_batches_is_refused_before_the_sweep(self, tmp_path, fit_kwargs,
                                                                             trainer_kwargs, cause):
        Counted.calls.clear()
        finder = LRRangeTest(metric="val_loss", num_steps=20, progress_bar=False)
        trainer = tiny_trainer(tmp_path, callbacks=[finder], max_steps=1, **trainer_kwargs)
        with pytest.raises(MisconfigurationException) as err:
            trainer.fit(Counted(tiny_model().net, num_classes=4), train_dataloaders=_loader(64), **fit_kwargs)
        message = str(err.value)
        assert f"metric='val_loss') needs validation data, but {cause}; " in message
        assert message.endswith("or set metric='train_loss'.") and "\n" not in message
        assert Counted.calls == [] and finder.result is None  # refused before any sweep step


class FloatLoss(Counted):
    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx).item()


class NoGradLoss(Counted):
    def training_step(self, batch, batch_idx):
        with torch.no_grad():
            return super().training_step(batch, batch_idx)


class DetachedLoss(Counted):
    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx).detach()


class DictWithoutLoss(Counted):
    def training_step(self, batch, batch_idx):
        return {"objective": super().training_step(batch, batch_idx)}


class Unsized(torch.utils.data.IterableDataset):
    """64 samples without ``__len__``."""

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(64):
            yield torch.randn(40, generator=g), torch.randint(0, 4, (), generator=g)


class TestWrongLoss:
    @pytest.mark.parametrize("module, message", [
        (FloatLoss, (r"^LRRangeTest: training_step returned a float \([0-9.]+\), not a tensor, .*; return the "
                     r"loss tensor itself \(not loss.item\(\) or float\(loss\)\)\.$")),
        (NoGradLoss, (r"^LRRangeTest: the loss training_step returned does not require grad .*torch.no_grad\(\) "
                      r"around it\.$")),
        (DetachedLoss, (r"^LRRangeTest: the loss training_step returned does not require grad \(computed under "
                        r"torch.no_grad\(\), detached")),
        (DictWithoutLoss, r"^LRRangeTest: training_step returned a dict without a 'loss' key \(keys \['objective'\]\)"),
    ], ids=["float", "no_grad", "detached", "dict"])
    def test_fails_at_the_first_sweep_step_naming_training_step(self, tmp_path, module, message):
        Counted.calls.clear()
        model = module(tiny_model().net, num_classes=4)
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = tiny_trainer(tmp_path, callbacks=[LRRangeTest(num_steps=20, progress_bar=False)], max_steps=1)
        with pytest.raises(MisconfigurationException, match=message) as err:
            trainer.fit(model, datamodule=tiny_data())
        assert "\n" not in str(err.value)
        assert Counted.calls == [0]  # the first sweep step, no further
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())  # and the state is restored


class TestStepCounts:
    @pytest.mark.parametrize("loader, trainer_kwargs, cause", [
        (_loader(0), {}, "limit_train_batches=1.0"),
        (_loader(64), {"limit_train_batches": 0}, "limit_train_batches=0"),
    ], ids=["empty dataset", "limit 0"])
    def test_no_training_batch_is_named_as_such(self, tmp_path, loader, trainer_kwargs, cause):
        trainer = tiny_trainer(tmp_path, callbacks=[LRRangeTest(num_steps=20)], **trainer_kwargs)
        with pytest.raises(MisconfigurationException) as err:
            trainer.fit(tiny_model(), train_dataloaders=loader)
        assert str(err.value) == (
            f"LRRangeTest: the train dataloader gives no batch ({cause}); the range test and the schedule need "
            "training batches: check limit_train_batches and the dataset (its length, the batch size, drop_last).")

    @pytest.mark.parametrize("spec", [schedules.Triangular(), schedules.OneCycle()], ids=repr)
    def test_a_loader_without_length_and_no_max_steps_asks_for_max_steps(self, tmp_path, spec):
        trainer = tiny_trainer(tmp_path, callbacks=[LRRangeTest(spec, num_steps=20)], max_epochs=1)
        with pytest.raises(MisconfigurationException) as err:
            trainer.fit(tiny_model(), train_dataloaders=DataLoader(Unsized(), batch_size=16))
        assert str(err.value) == (
            f"LRRangeTest: {type(spec).__name__} is fitted to the whole run, but the train dataloader has no __len__, "
            "so the run's length in steps is unknown; set max_steps on the Trainer.")

    def test_a_constant_lr_needs_no_length(self, tmp_path):
        finder = LRRangeTest(schedules.Constant(), num_steps=20, progress_bar=False)
        trainer = tiny_trainer(tmp_path, callbacks=[finder], max_epochs=1)
        trainer.fit(tiny_model(), train_dataloaders=DataLoader(Unsized(), batch_size=16))
        assert len(finder.result.lrs) >= 20 and trainer.global_step == 4  # one pass over the 64 samples


class TestResumeMessages:
    def test_another_epoch_length_names_the_config_keys(self):
        spec = schedules.SGDR(cycle_epochs=1)
        saved = resume.plan(spec, (0.01, 0.1), [1.0], steps_per_epoch=16, total_steps=64)
        now = resume.plan(spec, (0.01, 0.1), [1.0], steps_per_epoch=8, total_steps=64)
        assert resume.mismatch(saved, now) == (
            "SGDR measures its cycles in epochs of 16 optimizer steps in the checkpoint, but this run has 8 per epoch; "
            "resume with the checkpoint's data.batch_size, trainer.limit_train_batches, "
            "trainer.accumulate_grad_batches and trainer.devices (whichever changed), or start a new run without "
            "ckpt_path")
        assert resume.mismatch(saved, saved) is None

    def test_a_field_an_older_checkpoint_did_not_save_counts_as_its_default(self):
        spec = schedules.SGDR(cycle_steps=10)
        now = resume.plan(spec, (0.01, 0.1), [1.0], steps_per_epoch=16, total_steps=64)
        older = copy.deepcopy(now)
        del older["schedule"]["restart_warmup_steps"], older["schedule"]["restart_warmup"]
        assert resume.mismatch(older, now) is None
        ramped = resume.plan(dataclasses.replace(spec, restart_warmup_steps=3), (0.01, 0.1), [1.0],
                             steps_per_epoch=16, total_steps=64)
        message = resume.mismatch(older, ramped)  # the older version trained without the ramp: not this run
        assert message.startswith("the checkpoint trained with SGDR(cycle_epochs=None, cycle_steps=10, ")
        assert "restart_warmup_steps=None)" in message and "restart_warmup_steps=3)" in message

    def test_a_saved_field_still_counts_as_saved(self):
        spec = schedules.SGDR(cycle_steps=10)
        saved = resume.plan(dataclasses.replace(spec, restart_warmup_steps=3), (0.01, 0.1), [1.0], 16, 64)
        assert "restart_warmup_steps=3) but this run configures" in resume.mismatch(
            saved, resume.plan(spec, (0.01, 0.1), [1.0], 16, 64))

    def test_field_defaults_are_the_specs(self):
        assert resume.field_defaults("SGDR")["restart_warmup_steps"] is None
        assert resume.field_defaults("SGDR")["cycle_mult"] == 2.0
        assert resume.field_defaults("NoSuchSchedule") == {} and resume.field_defaults(None) == {}

    @pytest.mark.slow
    def test_a_checkpoint_from_before_a_field_was_added_resumes(self, tmp_path):
        spec = schedules.SGDR(cycle_steps=4)
        first = tiny_trainer(tmp_path, callbacks=[LRRangeTest(spec, num_steps=20, progress_bar=False)], max_steps=6,
                             max_epochs=-1)
        first.fit(tiny_model(), datamodule=tiny_data())
        path = tmp_path / "older.ckpt"
        first.save_checkpoint(path)
        checkpoint = torch.load(path, weights_only=True)
        (key,) = [k for k in checkpoint["callbacks"] if k.startswith("LRRangeTest")]
        del checkpoint["callbacks"][key]["schedule"]["restart_warmup_steps"]  # as an earlier version saved it
        torch.save(checkpoint, path)
        finder, recorder = LRRangeTest(schedules.SGDR(cycle_steps=4), num_steps=20, progress_bar=False), LRRecorder()
        trainer = tiny_trainer(tmp_path, callbacks=[finder, recorder], max_steps=10, max_epochs=-1)
        trainer.fit(tiny_model(), datamodule=tiny_data(), ckpt_path=path, **FIT_WEIGHTS_ONLY)
        assert finder.restored and trainer.global_step == 10 and len(recorder.lrs) == 4
        result = first.callbacks[0].result
        expected = spec.build(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), result.base_lr,
                              result.max_lr, steps_per_epoch=16, total_steps=10)
        lrs = []
        for _ in range(10):
            lrs.append(expected.get_last_lr()[0])
            expected.optimizer.step()
            expected.step()
        np.testing.assert_allclose([lrs_[0] for lrs_ in recorder.lrs], lrs[6:], rtol=1e-9)  # it goes on at step 6
