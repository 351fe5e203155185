"""LRRangeTest inside real Lightning projects: the Lightning components users combine it with."""

from __future__ import annotations

import math
from typing import ClassVar

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import BackboneFinetuning, LearningRateFinder
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from lightning_clr import LRRangeTest, schedules
from lightning_clr._compat import FIT_WEIGHTS_ONLY
from lightning_clr.models import Classifier
from tests.helpers import LRRecorder, tiny_data, tiny_model, tiny_trainer

FINDER = {"num_steps": 20, "start_lr": 1e-4, "end_lr": 1.0, "progress_bar": False}


class Stream(IterableDataset):
    """An endless-looking stream without ``__len__``: the synthetic set, batch by batch."""

    def __init__(self) -> None:
        dm = tiny_data()
        dm.setup()
        self.data = dm._train

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for i in torch.randperm(len(self.data), generator=g).tolist():
            yield self.data[i]


class TestStreaming:
    def test_a_loader_without_length_trains_with_max_steps(self, tmp_path):
        finder = LRRangeTest(schedules.OneCycle(), **FINDER)
        recorder = LRRecorder()
        trainer = tiny_trainer(tmp_path, callbacks=[finder, recorder], max_steps=12, max_epochs=-1)
        trainer.fit(tiny_model(), train_dataloaders=DataLoader(Stream(), batch_size=32))
        assert len(finder.result.lrs) >= 20 and trainer.global_step == 12
        lrs = [lr[0] for lr in recorder.lrs]
        assert max(lrs) == pytest.approx(finder.result.max_lr, rel=0.05)  # the 1cycle peak, over 12 steps

    def test_a_shape_in_epochs_names_the_fix(self, tmp_path):
        finder = LRRangeTest(schedules.SGDR(cycle_epochs=1), **FINDER)
        trainer = tiny_trainer(tmp_path, callbacks=[finder], max_steps=12, max_epochs=-1)
        with pytest.raises(MisconfigurationException, match="no __len__.*cycle_steps.*limit_train_batches"):
            trainer.fit(tiny_model(), train_dataloaders=DataLoader(Stream(), batch_size=32))


class Backboned(Classifier):
    """A classifier whose ``backbone`` BackboneFinetuning freezes, then unfreezes as a new param group."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 4)), num_classes=4)
        self.backbone = self.net[0]

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1, momentum=0.9)


@pytest.mark.parametrize("spec", [schedules.Triangular2(), schedules.SGDR(), schedules.OneCycle(),
                                  schedules.Cosine(), schedules.StepDecay(step_epochs=1)], ids=repr)
def test_backbone_finetuning_adds_a_group_that_follows_the_schedule(spec, tmp_path):
    finder = LRRangeTest(spec, **FINDER)
    tuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1, should_align=False)
    recorder = LRRecorder()
    trainer = tiny_trainer(tmp_path, callbacks=[tuning, finder, recorder], max_epochs=3, limit_train_batches=8)
    trainer.fit(Backboned(), datamodule=tiny_data())
    groups = [len(lrs) for lrs in recorder.lrs]
    assert groups[:8] == [1] * 8 and groups[8:] == [2] * 16  # added at the unfreeze epoch, and training went on
    for epoch in (1, 2):  # within an epoch the backbone keeps the ratio it was given at the epoch's start
        ratios = [b / a for a, b in recorder.lrs[8 * epoch : 8 * epoch + 8]]
        assert all(math.isclose(r, ratios[0], rel_tol=1e-9) for r in ratios)
        if epoch == 1:
            assert ratios[0] == pytest.approx(0.1, rel=1e-6)  # backbone_initial_ratio_lr
    assert finder._group_ratios[1] == pytest.approx(ratios[0], rel=1e-9)  # the live ratios follow the groups
    assert finder.result.group_ratios == [1.0]  # the record of the range test does not


def test_replaced_one_cycle_gives_back_adamw_betas(tmp_path):
    class WithOneCycle(Classifier):
        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=1e-3, betas=(0.9, 0.999))
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.OneCycleLR(opt, 0.01, total_steps=100)}

    recorder = LRRecorder()
    finder = LRRangeTest(schedules.Constant(), **FINDER)
    with pytest.warns(UserWarning, match=r"betas \(0.95, 0.999\) -> \(0.9, 0.999\)"):
        tiny_trainer(tmp_path, callbacks=[finder, recorder], max_steps=4).fit(
            WithOneCycle(tiny_model().net, num_classes=4), datamodule=tiny_data())
    assert recorder.momenta == [0.9] * 4


@pytest.mark.parametrize("old", [
    lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=5),
    lambda opt: torch.optim.lr_scheduler.CyclicLR(opt, 0.01, 0.05, step_size_up=4),
], ids=["StepLR", "CyclicLR"])
@pytest.mark.slow
def test_a_checkpoint_written_without_the_range_test_is_refused_before_the_sweep(old, tmp_path):
    class Scheduled(Classifier):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": old(opt), "interval": "step"}}

    net = tiny_model().net
    first = tiny_trainer(tmp_path / "a", max_steps=6)
    first.fit(Scheduled(net, num_classes=4), datamodule=tiny_data())
    first.save_checkpoint(tmp_path / "foreign.ckpt")
    calls = []

    class Counting(Scheduled):
        def training_step(self, batch, batch_idx):
            calls.append(batch_idx)
            return super().training_step(batch, batch_idx)

    trainer = tiny_trainer(tmp_path / "b", max_steps=12, callbacks=[LRRangeTest(**FINDER)])
    with pytest.raises(MisconfigurationException, match="written without LRRangeTest.*load_from_checkpoint"):
        trainer.fit(Counting(net, num_classes=4), datamodule=tiny_data(), ckpt_path=tmp_path / "foreign.ckpt",
                    **FIT_WEIGHTS_ONLY)
    assert calls == []  # refused before any sweep step


@pytest.mark.parametrize("spec", [schedules.SGDR(), schedules.OneCycle()], ids=repr)
def test_fast_dev_run_skips_the_range_test(spec, tmp_path, caplog):
    finder = LRRangeTest(spec, **FINDER)
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", callbacks=[finder], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="skipped, since fast_dev_run is on; .* Run without fast_dev_run to run"):
        trainer.fit(tiny_model(), datamodule=tiny_data())
    assert finder.result is None and trainer.global_step == 1
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.1  # the module's own LR


@pytest.mark.slow
def test_a_second_fit_keeps_the_bounds_and_fits_the_schedule_to_the_rest(tmp_path):
    finder = LRRangeTest(schedules.OneCycle(), **FINDER)
    recorder = LRRecorder()
    trainer = tiny_trainer(tmp_path, callbacks=[finder, recorder], max_epochs=1, limit_train_batches=8)
    model = tiny_model()
    trainer.fit(model, datamodule=tiny_data())
    first = finder.result
    trainer.fit_loop.max_epochs = 3
    trainer.fit(model, datamodule=tiny_data())
    assert finder.result is first  # no second sweep
    second = [lrs[0] for lrs in recorder.lrs[8:]]
    assert len(second) == 16
    assert max(second) == pytest.approx(first.max_lr, rel=0.05)  # a whole 1cycle in the 16 steps left
    assert second[-1] < first.max_lr / 100  # ending at its bottom, not near the peak


def test_lightning_learning_rate_finder_alongside_is_refused(tmp_path):
    trainer = tiny_trainer(tmp_path, callbacks=[LearningRateFinder(), LRRangeTest(**FINDER)], max_steps=2)
    with pytest.raises(MisconfigurationException, match="LearningRateFinder .* both would sweep the LR; keep one"):
        trainer.fit(tiny_model(), datamodule=tiny_data())


def test_the_modules_optimizer_hooks_run_in_the_sweep(tmp_path):
    seen = {"optimizer_step": 0, "optimizer_zero_grad": 0, "on_before_zero_grad": 0}

    class Hooked(Classifier):
        def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
            seen["optimizer_step"] += 1
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

        def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
            seen["optimizer_zero_grad"] += 1
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

        def on_before_zero_grad(self, optimizer):
            seen["on_before_zero_grad"] += 1

    finder = LRRangeTest(max_extensions=0, **FINDER)
    tiny_trainer(tmp_path, callbacks=[finder], max_steps=3).fit(Hooked(tiny_model().net, num_classes=4),
                                                                 datamodule=tiny_data())
    points = len(finder.result.lrs)
    assert seen == {k: points + 3 for k in seen}  # every sweep step and every training step


@pytest.mark.parametrize("where", ["attribute", "hparams"])
def test_update_attr_writes_the_found_lr(where, tmp_path):
    class WithLR(Classifier):
        def __init__(self, lr: float = 0.1):
            super().__init__(tiny_model().net, num_classes=4)
            if where == "hparams":
                self.save_hyperparameters()
            else:
                self.lr = lr

    model = WithLR()
    finder = LRRangeTest(update_attr=True, **FINDER)
    tiny_trainer(tmp_path, callbacks=[finder], max_steps=1).fit(model, datamodule=tiny_data())
    value = model.hparams.lr if where == "hparams" else model.lr
    assert value == finder.result.max_lr != 0.1


def test_update_attr_without_an_attribute_fails_before_the_sweep(tmp_path):
    trainer = tiny_trainer(tmp_path, callbacks=[LRRangeTest(update_attr=True, **FINDER)], max_steps=1)
    with pytest.raises(MisconfigurationException, match="no attribute or hparam lr or learning_rate"):
        trainer.fit(tiny_model(), datamodule=tiny_data())


def test_a_validation_loss_sweep_records_the_held_out_loss(tmp_path):
    """metric='val_loss': each point is the mean loss on the same 2 validation batches, after the step."""
    class Recorded(Classifier):
        seen: ClassVar[list] = []

        def training_step(self, batch, batch_idx):
            Recorded.seen.append((self.training, torch.is_grad_enabled(), batch[0][0, 0].item()))
            return super().training_step(batch, batch_idx)

    dm = tiny_data()
    finder = LRRangeTest(metric="val_loss", val_batches=2, max_extensions=0, **FINDER)
    tiny_trainer(tmp_path, callbacks=[finder], max_steps=1).fit(
        Recorded(tiny_model().net, num_classes=4), datamodule=dm)
    points = len(finder.result.lrs)
    dm.setup()
    batches = [b[0][0, 0].item() for b, _ in zip(dm.val_dataloader(), range(2))]  # the first (up to) 2
    held_out = [s for s in Recorded.seen if not s[0]]
    assert len(held_out) == len(batches) * points and not any(grad for _, grad, _ in held_out)  # eval, no grad
    assert [value for _, _, value in held_out] == batches * points  # the same batches at every step


def test_a_validation_loss_sweep_without_validation_data_names_the_fix(tmp_path):
    finder = LRRangeTest(metric="val_loss", **FINDER)
    trainer = tiny_trainer(tmp_path, callbacks=[finder], max_steps=1)
    with pytest.raises(MisconfigurationException, match="metric='val_loss'.* needs validation data"):
        trainer.fit(tiny_model(), train_dataloaders=DataLoader(Stream(), batch_size=32))
