"""LRRangeTest end to end on tiny real Trainers."""

from __future__ import annotations

import math
import random
import re
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_clr import LRRangeTest, RangeTestError, schedules
from lightning_clr._compat import FIT_WEIGHTS_ONLY
from lightning_clr.range_test.sweep import sweep_lrs
from tests.helpers import LRRecorder, tiny_data, tiny_model, tiny_trainer


class StateRecorder(L.Callback):
    """Deep-copies weights, buffers, optimizer state and RNG state in ``on_fit_start``."""

    def on_fit_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        self.tensors = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.opt_state = {
            i: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
            for i, s in opt.state_dict()["state"].items()
        }
        self.groups = [{k: v for k, v in g.items() if k not in ("lr", "initial_lr", "params")} for g in opt.param_groups]
        self.rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        self.training = pl_module.training


def _same_rng(a, b) -> bool:
    return (
        a["python"] == b["python"]
        and torch.equal(a["torch"], b["torch"])
        and all(np.array_equal(x, y) for x, y in zip(a["numpy"], b["numpy"]))
    )


class WarmedAdam(L.LightningModule):
    """A BatchNorm model whose Adam optimizer already holds state when fit starts."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(40, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 4))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=1e-3)
        self.net(torch.randn(8, 40)).sum().backward()
        opt.step()  # non-empty exp_avg / exp_avg_sq / step
        opt.zero_grad()
        return opt


class TestRestore:
    def test_weights_optimizer_rng_bit_exact(self, tmp_path):
        before, after = StateRecorder(), StateRecorder()
        finder = LRRangeTest(num_steps=30, start_lr=1e-4, end_lr=1.0)
        trainer = tiny_trainer(tmp_path, callbacks=[before, finder, after], max_steps=1)
        trainer.fit(WarmedAdam(), datamodule=tiny_data())

        assert len(finder.result.lrs) >= 10  # the sweep really trained
        assert before.tensors.keys() == after.tensors.keys()
        for key in before.tensors:
            assert torch.equal(before.tensors[key], after.tensors[key]), key
        assert "net.1.running_mean" in before.tensors and before.opt_state
        for i, state in before.opt_state.items():
            for k, v in state.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(after.opt_state[i][k])), (i, k)
        assert before.groups == after.groups
        assert before.training == after.training

    @pytest.mark.slow
    def test_rng_left_as_without_sweep(self, tmp_path):
        def rng_after(finder):
            L.seed_everything(0, verbose=False)
            after = StateRecorder()
            tiny_trainer(tmp_path, callbacks=[finder, after], max_steps=1).fit(tiny_model(), datamodule=tiny_data())
            return after.rng

        swept = rng_after(LRRangeTest(num_steps=30, start_lr=1e-4, end_lr=1.0))
        skipped = rng_after(LRRangeTest(bounds=(0.01, 0.1)))
        assert _same_rng(swept, skipped)

    @pytest.mark.slow
    def test_found_bounds_run_equals_run_with_explicit_bounds(self, tmp_path):
        """With the sweep fully undone, training afterwards is the run it would have been without it."""

        def fit(finder):
            L.seed_everything(3, verbose=False)
            model = tiny_model(seed=3)
            trainer = tiny_trainer(tmp_path, callbacks=[finder], max_epochs=2)
            trainer.fit(model, datamodule=tiny_data())
            return model, trainer

        finder = LRRangeTest(schedules.Triangular(step_epochs=0.5), num_steps=40)
        swept, _ = fit(finder)
        bounds = (finder.result.base_lr, finder.result.max_lr)
        direct, _ = fit(LRRangeTest(schedules.Triangular(step_epochs=0.5), bounds=bounds))
        for (name, a), b in zip(swept.state_dict().items(), direct.state_dict().values()):
            assert torch.equal(a, b), name

    def test_error_at_first_step_restores_and_explains(self, tmp_path):
        model = tiny_model()
        with torch.no_grad():
            model.net.net[0].weight.fill_(float("nan"))
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = tiny_trainer(tmp_path, callbacks=[LRRangeTest(num_steps=20)])
        with pytest.raises(RangeTestError, match="not finite at the first range-test step"):
            trainer.fit(model, datamodule=tiny_data())
        for k, v in weights.items():
            assert torch.equal(v, model.state_dict()[k]) or torch.isnan(v).any(), k


class TestSweep:
    def test_records_num_steps_points_beyond_one_epoch_and_limits(self, tmp_path):
        finder = LRRangeTest(num_steps=40, start_lr=1e-4, end_lr=0.05, divergence_threshold=None, max_extensions=0,
                             sweep_share=None)
        trainer = tiny_trainer(tmp_path, callbacks=[finder], limit_train_batches=2)
        trainer.fit(tiny_model(), datamodule=tiny_data())  # 16 batches per epoch, 2 allowed per epoch
        assert len(finder.result.lrs) == 40
        assert finder.result.stop_reason == "completed"
        np.testing.assert_allclose(finder.result.lrs, sweep_lrs(1e-4, 0.05, 40, "exponential"), rtol=1e-12)

    @pytest.mark.parametrize("mode", ["exponential", "linear"])
    def test_sweep_spacing(self, mode):
        lrs = sweep_lrs(1e-3, 1.0, 11, mode)
        assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1.0)
        steps = np.diff(np.log(lrs)) if mode == "exponential" else np.diff(lrs)
        np.testing.assert_allclose(steps, steps[0], rtol=1e-9)

    def test_smoothing_is_bias_corrected(self, tmp_path):
        finder = LRRangeTest(num_steps=20, start_lr=1e-4, end_lr=1e-2, ema_beta=0.9)
        tiny_trainer(tmp_path, callbacks=[finder], max_steps=1).fit(tiny_model(), datamodule=tiny_data())
        r = finder.result
        assert r.losses[0] == pytest.approx(r.raw_losses[0], rel=1e-12)  # not biased toward 0
        avg = 0.0
        for k, raw in enumerate(r.raw_losses):
            avg = 0.9 * avg + 0.1 * raw
            assert r.losses[k] == pytest.approx(avg / (1 - 0.9 ** (k + 1)), rel=1e-9)

    def test_stops_on_divergence(self, tmp_path):
        finder = LRRangeTest(num_steps=100, start_lr=1e-3, end_lr=1e4, divergence_threshold=4.0)
        tiny_trainer(tmp_path, callbacks=[finder], max_steps=1).fit(tiny_model(), datamodule=tiny_data())
        r = finder.result
        assert r.stop_reason in ("diverged", "non-finite loss")
        assert 10 < len(r.lrs) < 100
        assert all(math.isfinite(v) for v in r.losses)
        assert r.lrs[0] <= r.base_lr < r.max_lr <= r.lrs[-1]

    def test_accumulation_one_point_per_optimizer_step(self, tmp_path):
        calls = []

        class Counting(type(tiny_model())):
            def training_step(self, batch, batch_idx):
                calls.append(batch_idx)
                return super().training_step(batch, batch_idx)

        model = Counting(tiny_model().net, num_classes=4)
        finder = LRRangeTest(num_steps=20, start_lr=1e-4, end_lr=1e-2, max_extensions=0)
        trainer = tiny_trainer(tmp_path, callbacks=[finder], accumulate_grad_batches=2, max_steps=1)
        trainer.fit(model, datamodule=tiny_data())
        assert len(finder.result.lrs) == 20
        assert calls[:40] == list(range(40))  # 2 micro-batches per point, then the real fit
        assert calls[40] == 0  # the real epoch starts at batch 0

    def test_no_file_written(self, tmp_path, monkeypatch):
        saves = []
        real_save = torch.save
        monkeypatch.setattr(torch, "save", lambda *a, **k: (saves.append(a), real_save(*a, **k)))
        monkeypatch.chdir(tmp_path)
        finder = LRRangeTest(num_steps=20, start_lr=1e-4, end_lr=1.0)
        trainer = tiny_trainer(tmp_path, callbacks=[finder], max_steps=1)
        trainer.fit(tiny_model(), datamodule=tiny_data())
        assert len(finder.result.lrs) > 10
        assert saves == []
        assert list(tmp_path.rglob("*")) == []


class TestInjection:
    def test_user_cyclic_lr_is_replaced(self, tmp_path):
        class WithCyclic(type(tiny_model())):
            def configure_optimizers(self):
                opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
                sched = torch.optim.lr_scheduler.CyclicLR(opt, 1e-4, 1e-3, step_size_up=3, cycle_momentum=False)
                return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        recorder = LRRecorder()
        schedule = schedules.Triangular(step_size=5)
        finder = LRRangeTest(schedule, num_steps=20, start_lr=1e-4, end_lr=1.0)
        model = WithCyclic(tiny_model().net, num_classes=4)
        trainer = tiny_trainer(tmp_path, callbacks=[finder, recorder], max_epochs=2)
        with pytest.warns(UserWarning, match="replacing the scheduler from configure_optimizers"):
            trainer.fit(model, datamodule=tiny_data())
        base, top = finder.result.base_lr, finder.result.max_lr
        assert not (base == pytest.approx(1e-4) and top == pytest.approx(1e-3))
        reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
        ref = torch.optim.lr_scheduler.CyclicLR(reference, base, top, step_size_up=5, cycle_momentum=False)
        expected = []
        for _ in range(len(recorder.lrs)):
            expected.append(reference.param_groups[0]["lr"])
            reference.step()
            ref.step()
        np.testing.assert_allclose([lr[0] for lr in recorder.lrs], expected, rtol=1e-12)
        assert len(trainer.lr_scheduler_configs) == 1
        assert trainer.lr_scheduler_configs[0].scheduler is finder.scheduler

    def test_refuses_to_replace_when_asked(self, tmp_path):
        class WithStep(type(tiny_model())):
            def configure_optimizers(self):
                opt = torch.optim.SGD(self.parameters(), lr=0.1)
                return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]

        finder = LRRangeTest(num_steps=20, replace_scheduler=False)
        trainer = tiny_trainer(tmp_path, callbacks=[finder])
        with pytest.raises(MisconfigurationException, match="replace_scheduler=False"):
            trainer.fit(WithStep(tiny_model().net, num_classes=4), datamodule=tiny_data())

    def test_param_group_ratio_kept(self, tmp_path):
        recorder = LRRecorder()
        model = tiny_model(head_lr_scale=10.0)
        finder = LRRangeTest(schedules.SGDR(cycle_steps=7), num_steps=20, start_lr=1e-4, end_lr=1.0)
        tiny_trainer(tmp_path, callbacks=[finder, recorder], max_epochs=2).fit(model, datamodule=tiny_data())
        assert finder.result.group_ratios == pytest.approx([1.0, 10.0])
        lrs = np.array(recorder.lrs)
        assert lrs.shape == (32, 2)
        np.testing.assert_allclose(lrs[:, 1] / lrs[:, 0], 10.0, rtol=1e-12)
        assert lrs[0, 0] == pytest.approx(finder.result.max_lr)  # SGDR starts at the peak

    def test_group_scales_override_the_optimizer_ratios(self, tmp_path):
        recorder = LRRecorder()
        model = tiny_model(head_lr_scale=10.0)  # the optimizer's ratio, 1:10, is overridden below
        finder = LRRangeTest(schedules.Triangular(step_size=5), num_steps=20, group_scales=[0.1, 0.4])
        tiny_trainer(tmp_path, callbacks=[finder, recorder], max_epochs=2).fit(model, datamodule=tiny_data())
        assert finder.result.group_ratios == pytest.approx([1.0, 4.0])
        lrs = np.array(recorder.lrs)
        np.testing.assert_allclose(lrs[:, 1] / lrs[:, 0], 4.0, rtol=1e-12)
        assert lrs[:, 0].min() == pytest.approx(finder.result.base_lr)  # the bounds are the first group's
        assert lrs[:, 0].max() == pytest.approx(finder.result.max_lr)

    def test_group_scales_must_match_the_groups(self, tmp_path):
        finder = LRRangeTest(num_steps=20, group_scales=[1.0, 2.0, 3.0])
        trainer = tiny_trainer(tmp_path, callbacks=[finder])
        with pytest.raises(MisconfigurationException, match=r"group_scales=\[1.0, 2.0, 3.0\] has 3 entries .* 2 param"):
            trainer.fit(tiny_model(head_lr_scale=10.0), datamodule=tiny_data())


class TestValidation:
    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"start_lr": -1.0}, r"start_lr must be a finite number in \(0, 10000\], got -1.0"),
            ({"start_lr": 1.0, "end_lr": 0.1}, r"end_lr \(0.1\) must be a finite number above start_lr \(1.0\)"),
            ({"end_lr": math.inf}, r"end_lr \(inf\) must be a finite number"),
            ({"num_steps": 5}, "num_steps must be an integer >= 20 to read a curve, got 5"),
            ({"rule": "smith", "rule_options": {"position": 0.5}}, r"rule_options \['position'\] are not options of"),
            ({"bounds": (0.001, math.inf)}, r"bounds must satisfy 0 < base_lr <= max_lr <= 10000, .* max_lr=inf"),
            ({"bounds": (0.001, 1e308)}, r"max_lr=1e\+308; e.g. bounds=\[0.01,0.1\]"),
            ({"max_extensions": -1}, "max_extensions must be an integer >= 0"),
            ({"min_fall": 1.0}, r"min_fall must be a fraction in \[0, 1\), got 1.0; .* 0 never reruns"),
            ({"max_reruns": 1.5}, "max_reruns must be an integer >= 0, got 1.5"),
            ({"mode": "cubic"}, "mode must be one of"),
            ({"ema_beta": 1.0}, "ema_beta must be in"),
            ({"divergence_threshold": 0.5}, "divergence_threshold must be > 1"),
            ({"rule": "guess"}, "rule must be one of"),
            ({"bounds": (0.5, 0.1)}, "0 < base_lr <= max_lr"),
            ({"group_scales": [1.0, 0.0]}, r"group_scales must be one finite positive number .* got \[1.0, 0.0\]"),
            ({"group_scales": []}, "group_scales must be one finite positive number"),
        ],
    )
    def test_bad_settings(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            LRRangeTest(**kwargs)

    def test_end_lr_none_is_the_default_end_and_a_bad_end_lr_names_the_fix(self):
        finder = LRRangeTest(end_lr=None)
        assert (finder._end_lr, finder._extendable) == (100.0, True) and isinstance(finder._end_lr, float)
        for bad in (0.0, -1.0, math.inf, math.nan, 1e5, True, "100"):
            with pytest.raises(ValueError, match=rf"end_lr \({re.escape(str(bad))}\) must be a finite number above "
                                                 r"start_lr \(1e-05\), at most 10000, or None for the default end "
                                                 r"\(100, passed while the loss still falls\); e.g. end_lr=10"):
                LRRangeTest(end_lr=bad)
        with pytest.raises(ValueError, match=r"end_lr \(None, the default end 100\) must be a finite number above "
                                             r"start_lr \(1000.0\)"):
            LRRangeTest(start_lr=1e3)


def test_adamw_mlp_finds_sane_bounds(tmp_path):
    finder = LRRangeTest(num_steps=60, start_lr=1e-5, end_lr=10.0)
    model = tiny_model(optimizer=partial(torch.optim.AdamW, lr=1e-3))
    tiny_trainer(tmp_path, callbacks=[finder], max_steps=1).fit(model, datamodule=tiny_data())
    r = finder.result
    assert 1e-5 <= r.base_lr < r.max_lr <= 10.0
    assert r.max_lr / r.base_lr >= 2


class TestContract:
    @pytest.mark.parametrize("resume", [False, True])
    def test_a_fit_builds_its_schedule_exactly_once(self, resume, tmp_path):
        builds = []

        class Counted(schedules.OneCycle):
            def build(self, *args, **kwargs):
                builds.append(1)
                return super().build(*args, **kwargs)

        finder = LRRangeTest(Counted(), num_steps=20, start_lr=1e-4, end_lr=1.0)
        trainer = tiny_trainer(tmp_path, callbacks=[finder], max_steps=4)
        trainer.fit(tiny_model(), datamodule=tiny_data())
        assert builds == [1]
        if resume:
            trainer.save_checkpoint(tmp_path / "a.ckpt")
            again = tiny_trainer(tmp_path, callbacks=[LRRangeTest(Counted(), num_steps=20)], max_steps=4)
            again.fit(tiny_model(), datamodule=tiny_data(), ckpt_path=tmp_path / "a.ckpt", **FIT_WEIGHTS_ONLY)
            assert builds == [1, 1]

    @pytest.mark.parametrize("old, new, value", [("min_lr", "start_lr", 1e-4), ("max_lr", "end_lr", 3.0),
                                                 ("smoothing", "ema_beta", 0.8)])
    def test_old_argument_names_warn_and_work(self, old, new, value):
        with pytest.warns(DeprecationWarning, match=f"{old}= is renamed {new}="):
            finder = LRRangeTest(**{old: value})
        assert getattr(finder, f"_{new}") == value

    def test_an_old_name_alone_is_a_value_given_and_both_names_are_refused(self):
        with pytest.warns(DeprecationWarning, match="max_lr= is renamed end_lr="):
            finder = LRRangeTest(max_lr=100.0)
        assert (finder._end_lr, finder._extendable) == (100.0, False)  # a ceiling, as end_lr=100
        for end_lr in (5.0, 100.0):  # 100 given is a value too, not the default
            with pytest.raises(TypeError, match="max_lr= is the old name of end_lr=; pass only end_lr="):
                LRRangeTest(max_lr=3.0, end_lr=end_lr)

    def test_enabled_is_gone_with_the_replacement_named(self):
        with pytest.raises(TypeError, match=r"enabled= is removed; pass bounds=\(base_lr, max_lr\)"):
            LRRangeTest(enabled=False)

    def test_an_unknown_argument_is_a_type_error(self):
        with pytest.raises(TypeError, match="unexpected keyword argument 'num_stepz'"):
            LRRangeTest(num_stepz=10)

    @pytest.mark.slow
    def test_rule_options_reach_the_rule(self, tmp_path):
        found = {}
        for stop in (0.3, 0.8):
            finder = LRRangeTest(num_steps=40, start_lr=1e-4, end_lr=10.0, rule_options={"stop_frac": stop})
            tiny_trainer(tmp_path, callbacks=[finder], max_steps=1).fit(tiny_model(), datamodule=tiny_data())
            found[stop] = finder.result.max_lr
        assert found[0.8] > found[0.3]  # a later stop on the same curve (same seed, same sweep)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_size_one_noise_does_not_end_the_sweep(seed, tmp_path):
    """Lightning's BoringModel at batch size 1: per-sample losses vary 10x, the loss truly diverges above ~0.1."""
    from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset

    class OneByOne(BoringModel):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(RandomDataset(32, 64), batch_size=1)

    L.seed_everything(seed, verbose=False)
    finder = LRRangeTest(schedules.Constant(), progress_bar=False, sweep_share=None)
    tiny_trainer(tmp_path, callbacks=[finder], max_steps=1).fit(OneByOne())
    r = finder.result
    assert len(r.lrs) >= 60 and r.lrs[-1] > 0.05  # the median-based check waits for the real blow-up
    assert max(r.raw_losses[:20]) / min(r.raw_losses[:20]) > 10  # the noise it did not stop on
    # bounds from the real fall (loss ~1.2 flat, ~0.6 at lr 0.03-0.09, then the blow-up), not from
    # two low samples at the first LRs: those once read as the curve's minimum, giving 1e-5..4e-5
    blow_up = r.lrs[int(np.flatnonzero(np.asarray(r.losses) > 10 * np.median(r.losses))[0])]
    assert 1e-3 < r.max_lr < blow_up / 2 and r.base_lr > 10 * r.lrs[0]


class Plateau(L.LightningModule):
    """A loss of 10 + (w - 1)^2 / 2 from w = 0: every sweep cuts it by under 5%, however long."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return 10.0 + 0.5 * (self.w - 1.0) ** 2 + 0.0 * batch[0].sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(8, 1)), batch_size=4)


class TestShallowSweep:
    def fit(self, tmp_path, run_steps=1, **kwargs):
        finder = LRRangeTest(schedules.Constant(position=1.0), num_steps=20, start_lr=1e-4, end_lr=1.0,
                             max_extensions=0, progress_bar=False, **{"sweep_share": None, **kwargs})
        model = Plateau()
        tiny_trainer(tmp_path, callbacks=[finder], max_steps=run_steps, max_epochs=-1).fit(model)
        return finder.result, model

    def test_is_swept_again_with_twice_the_steps(self, tmp_path):
        r, _ = self.fit(tmp_path)
        assert r.reruns == 2 and len(r.lrs) == 80  # 20 -> 40 -> 80 steps, the last curve kept
        np.testing.assert_allclose(r.lrs, sweep_lrs(1e-4, 1.0, 80, "exponential"), rtol=1e-9)
        fall = (max(r.losses) - min(r.losses)) / max(r.losses)
        assert 0.03 < fall < 0.05  # it is shallow, and the reruns stopped at max_reruns

    @pytest.mark.slow
    def test_min_fall_and_max_reruns_turn_it_off(self, tmp_path):
        for kwargs in ({"min_fall": 0.03}, {"min_fall": 0.0}, {"max_reruns": 0}):
            r, _ = self.fit(tmp_path, **kwargs)
            assert r.reruns == 0 and len(r.lrs) == 20, kwargs
        r, _ = self.fit(tmp_path, max_reruns=1)
        assert r.reruns == 1 and len(r.lrs) == 40

    @pytest.mark.parametrize("run_steps, reruns", [(1, 0), (79, 0), (80, 1), (160, 2)])
    def test_a_rerun_longer_than_the_share_of_the_run_does_not_run(self, run_steps, reruns, tmp_path):
        r, _ = self.fit(tmp_path, run_steps=run_steps, sweep_share=0.5)  # 40 steps fit in 80 at 0.5, not in 79
        assert r.reruns == reruns and len(r.lrs) == 20 * 2 ** reruns
        np.testing.assert_allclose(r.lrs, sweep_lrs(1e-4, 1.0, 20 * 2 ** reruns, "exponential"), rtol=1e-9)

    def test_every_rerun_starts_from_the_restored_state(self, tmp_path):
        r, model = self.fit(tmp_path)
        assert r.raw_losses[0] == pytest.approx(10.5)  # the last sweep began at w = 0 again
        # and so did training: one SGD step at max_lr from w = 0, where the gradient is -1
        assert float(model.w.detach()) == pytest.approx(r.max_lr, rel=1e-6)


class Stop(L.Callback):
    """Ends the fit at its first training batch: the run is planned at full length, one step is trained."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        trainer.should_stop = True


class TestSweepShare:
    """The sweep takes at most ``sweep_share`` of the run's optimizer steps, over the same LR range."""

    def fit(self, tmp_path, run_steps, **kwargs):
        finder = LRRangeTest(start_lr=1e-4, end_lr=1.0, progress_bar=False, **kwargs)
        trainer = tiny_trainer(tmp_path, callbacks=[finder, Stop()], max_steps=run_steps, max_epochs=-1)
        trainer.fit(tiny_model(), datamodule=tiny_data())
        assert trainer.global_step == 1 and trainer.estimated_stepping_batches == run_steps
        return finder.result

    @pytest.mark.parametrize("run_steps, share, points", [(40, 0.5, 20), (60, 0.5, 30), (1000, 0.5, 200),
                                                          (40, None, 200), (60, 0.25, 20)])
    def test_the_sweep_follows_the_planned_run(self, run_steps, share, points, tmp_path):
        r = self.fit(tmp_path, run_steps, sweep_share=share, min_fall=0.0)
        assert len(r.lrs) == points and r.stop_reason == "completed"
        assert r.lrs == sweep_lrs(1e-4, 1.0, points, "exponential")  # the same range, coarser

    def test_a_shortened_sweep_says_so_with_the_numbers(self, tmp_path, caplog):
        with caplog.at_level("INFO"):
            self.fit(tmp_path, 60, sweep_share=0.5, min_fall=0.0)
        assert "LRRangeTest: the run has 60 optimizer steps; the sweep takes 30 (sweep_share=0.5)." in caplog.text

    def test_with_no_share_a_sweep_longer_than_the_run_says_so_with_the_numbers(self, tmp_path, caplog, recwarn):
        with caplog.at_level("INFO"):
            r = self.fit(tmp_path, 60, num_steps=100, min_fall=0.0)
        assert len(r.lrs) == 100  # not shortened: only said
        assert ("LRRangeTest: the sweep takes 100 steps, 1.7x the run's 60 optimizer steps; sweep_share=0.5 would cap "
                "it at 30 (coarser bounds), and bounds=(base_lr, max_lr) skips it.") in caplog.text
        assert not [w for w in recwarn if "sweep takes" in str(w.message)]  # information, not a warning

    def test_a_sweep_longer_than_the_share_warns_with_the_ratio(self, tmp_path, caplog):
        with pytest.warns(UserWarning, match=r"^LRRangeTest: the sweep takes 20 steps, the fewest a curve can be read "
                                             r"from: 0.71x the run's 28 \(sweep_share=0.5\); bounds=\(base_lr, "
                                             r"max_lr\) skips the sweep.$"):
            r = self.fit(tmp_path, 28, sweep_share=0.5, min_fall=0.0)
        assert len(r.lrs) == 20
        assert "optimizer steps; the sweep takes" not in caplog.text  # one message, not two

    def test_a_sweep_within_the_share_says_nothing(self, tmp_path, caplog, recwarn):
        with caplog.at_level("INFO"):
            r = self.fit(tmp_path, 1000, num_steps=40, sweep_share=0.5, min_fall=0.0)
        assert len(r.lrs) == 40 and "sweep_share" not in caplog.text
        assert not [w for w in recwarn if "sweep_share" in str(w.message)]
