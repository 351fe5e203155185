"""Schedule-Free AdamW in LRRangeTest: swept in train mode, trained at max_lr without a schedule, eval weights saved."""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_clr import LRRangeTest
from lightning_clr._compat import FIT_WEIGHTS_ONLY
from lightning_clr.models import Classifier
from lightning_clr.range_test.lr_free import eval_weights
from tests.helpers import tiny_data, tiny_trainer

schedulefree = pytest.importorskip("schedulefree")

WARMUP = 5
BATCHES = 8  # training batches per epoch
FINDER = {"num_steps": 30, "start_lr": 1e-4, "end_lr": 1.0, "progress_bar": False, "sweep_share": 0.5}


class Recorded(L.LightningModule):
    """A two-class MLP (with a BatchNorm layer when ``batch_norm``) that records, at every step, the
    optimizer's ``train_mode``, whether gradients are on, and the param group's warm-up and lr."""

    def __init__(self, batch_norm: bool = False, scheduler: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        norm = [nn.BatchNorm1d(16)] if batch_norm else []
        self.net = nn.Sequential(nn.Linear(8, 16), *norm, nn.ReLU(), nn.Linear(16, 2))
        self.scheduler = scheduler
        self.calls: list[tuple[str, bool, bool, int]] = []
        self.batches: list[float] = []  # a fingerprint of each batch trained on (with gradients)
        self.losses: list[float] = []

    def _record(self, stage: str) -> None:
        group = self.trainer.optimizers[0].param_groups[0]
        self.calls.append((stage, group["train_mode"], torch.is_grad_enabled(), group["warmup_steps"]))

    def training_step(self, batch, batch_idx):
        self._record("train")
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        if torch.is_grad_enabled():
            self.batches.append(float(x.sum()))
            self.losses.append(float(loss.detach()))
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self._record("val")
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        optimizer = schedulefree.AdamWScheduleFree(self.parameters(), lr=1e-3, warmup_steps=WARMUP)
        if not self.scheduler:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)}


def _loaders(shuffle: bool = True) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] + 0.3 * x[:, 1] > 0).long())
    return (torch.utils.data.DataLoader(data, batch_size=32, shuffle=shuffle),
            torch.utils.data.DataLoader(data, batch_size=128))


def _fit(root, model, finder, max_epochs=1, callbacks=(), ckpt_path=None, shuffle=True, **kwargs):
    saves = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    trainer = tiny_trainer(root, max_epochs=max_epochs, callbacks=[finder, *callbacks], limit_train_batches=BATCHES,
                           enable_checkpointing=saves, **kwargs)
    trainer.fit(model, *_loaders(shuffle), ckpt_path=ckpt_path, **FIT_WEIGHTS_ONLY)
    return trainer


@pytest.mark.parametrize("batch_norm", [False, True], ids=["mlp", "batch_norm"])
def test_sweep_in_train_mode_without_warmup_then_max_lr_and_no_schedule(batch_norm, tmp_path):
    model, finder = Recorded(batch_norm), LRRangeTest(**FINDER)
    trainer = _fit(tmp_path, model, finder, max_epochs=2)
    optimizer, result = trainer.optimizers[0], finder.result
    group = optimizer.param_groups[0]
    steps = [c for c in model.calls if c[0] == "train" and c[2]]  # the sweep's and the training's, with gradients
    sweep, training = steps[:-2 * BATCHES], steps[-2 * BATCHES:]
    # a 16-step run: the sweep takes the fewest steps a curve is read from (sweep_share), with no rerun
    assert len(sweep) == len(result.lrs) == 20 and result.stop_reason == "completed" and result.reruns == 0
    assert all(train_mode and warmup == 0 for _, train_mode, _, warmup in sweep)  # no warm-up scaled the sweep
    assert all(train_mode and warmup == WARMUP for _, train_mode, _, warmup in training)  # its own warm-up stays
    # the sanity check's two batches and two validations of two, all at x
    assert [c[1] for c in model.calls if c[0] == "val"] == [False] * 6
    # BatchNorm statistics recomputed at x before each validation and after fit: 4 batches, no gradients
    recompute = [c for c in model.calls if c[0] == "train" and not c[2]]
    assert recompute == ([("train", False, False, WARMUP)] * 4 * 4 if batch_norm else [])
    assert group["train_mode"] is False and group["k"] == 2 * BATCHES  # eval mode after fit; the sweep left no step
    assert group["lr"] == result.max_lr and 1e-3 < result.max_lr < 1.0
    assert trainer.lr_scheduler_configs == [] and finder.scheduler is None


@pytest.mark.slow
def test_the_batch_norm_recomputation_leaves_no_trace(tmp_path):
    """The same training batches, in the same order, with and without the recomputation (the loader
    shuffles from the global generator), and what training_step logs there never reaches the logger."""
    runs = []
    for batch_norm in (False, True):
        L.seed_everything(0, verbose=False)
        model = Recorded(batch_norm)
        trainer = _fit(tmp_path / str(batch_norm), model, LRRangeTest(bounds=(0.002, 0.02), progress_bar=False),
                       max_epochs=2, logger=CSVLogger(tmp_path / str(batch_norm)), log_every_n_steps=1)
        runs.append(model.batches)
        with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        logged = [float(r["train_loss"]) for r in rows if r["train_loss"]]
        assert logged == pytest.approx(model.losses, rel=1e-6)  # the training steps' losses, nothing else
        assert sum(c[0] == "train" and not c[2] for c in model.calls) == (16 if batch_norm else 0)
    assert runs[0] == runs[1] and len(runs[0]) == 2 * BATCHES and runs[0][:BATCHES] != runs[0][BATCHES:]


class CountingClassifier(Classifier):
    """The package's classifier (a torchmetrics accuracy updated in training_step) with a BatchNorm net,
    counting the correct predictions of each training step taken with gradients."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(40, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
        super().__init__(net, partial(schedulefree.AdamWScheduleFree, lr=1e-3), num_classes=4)
        self.counts: list[tuple[int, int]] = []

    def training_step(self, batch, batch_idx):
        if torch.is_grad_enabled():
            x, y = batch
            self.counts.append((int((self(x).argmax(1) == y).sum()), len(y)))
        return super().training_step(batch, batch_idx)


def test_the_recomputation_leaves_the_epochs_accuracy_alone(tmp_path):
    model = CountingClassifier()
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_train_batches=BATCHES, limit_val_batches=2,
                           callbacks=[LRRangeTest(bounds=(0.005, 0.05), progress_bar=False)])
    trainer.fit(model, datamodule=tiny_data())
    last = model.counts[BATCHES:]  # training_step's own metric update comes after the count, on the same output
    assert len(model.counts) == 2 * BATCHES
    accuracy = sum(c for c, _ in last) / sum(n for _, n in last)
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(accuracy)
    assert model.train_acc.update_count == 0  # reset at the epoch's end; the recomputation after fit left none


def test_explicit_bounds_train_at_their_max_lr(tmp_path):
    model, finder = Recorded(), LRRangeTest(bounds=(0.002, 0.02), progress_bar=False)
    trainer = _fit(tmp_path, model, finder)
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.02 and finder.result.stop_reason == "explicit bounds"
    assert sum(c[0] == "train" and c[2] for c in model.calls) == BATCHES  # no sweep step
    assert trainer.lr_scheduler_configs == []


def test_a_scheduler_from_configure_optimizers_is_dropped_and_named(tmp_path, caplog):
    model, finder = Recorded(scheduler=True), LRRangeTest(**FINDER)
    with pytest.warns(UserWarning, match=r"dropping the scheduler from configure_optimizers \(StepLR\): "
                                         r"AdamWScheduleFree is Schedule-Free"):
        trainer = _fit(tmp_path, model, finder)
    assert trainer.lr_scheduler_configs == []
    assert [g["lr"] for g in trainer.optimizers[0].param_groups] == [finder.result.max_lr]  # no StepLR decay


def test_one_info_line_gives_the_lr_and_the_warmup(tmp_path, caplog):
    finder = LRRangeTest(bounds=(0.002, 0.02), progress_bar=False)
    with caplog.at_level("INFO"):
        _fit(tmp_path, Recorded(), finder)
    lines = [r.getMessage() for r in caplog.records if "trains at lr" in r.getMessage()]
    assert lines == [("LRRangeTest: AdamWScheduleFree trains at lr=0.02 (the found max_lr) with no schedule, after "
                      "its own warm-up of 5 steps (rule=explicit, explicit bounds).")]


def test_an_explicit_schedule_is_not_installed_and_says_so(tmp_path):
    from lightning_clr import schedules

    finder = LRRangeTest(schedules.SGDR(cycle_steps=4), bounds=(0.002, 0.02), progress_bar=False)
    with pytest.warns(UserWarning, match="schedule=SGDR is not installed: AdamWScheduleFree is Schedule-Free"):
        trainer = _fit(tmp_path, Recorded(), finder)
    assert trainer.lr_scheduler_configs == []


class SavedWeights(L.Callback):
    """After LRRangeTest's hook: the checkpoint's weights, the optimizer's eval weights and the live ones."""

    def __init__(self) -> None:
        self.saved: list[tuple[dict, dict, dict]] = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        names = dict(pl_module.named_parameters())
        x = eval_weights(trainer.optimizers[0])
        self.saved.append(({n: checkpoint["state_dict"][n].clone() for n in names},
                           {n: x[p].clone() for n, p in names.items()},
                           {n: p.detach().clone() for n, p in names.items()}))


def test_every_checkpoint_stores_the_eval_weights_and_the_live_ones_stay(tmp_path):
    saver, model = SavedWeights(), Recorded(batch_norm=True)
    every = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    trainer = _fit(tmp_path, model, LRRangeTest(**FINDER), callbacks=[every, saver])
    assert len(saver.saved) == 2  # steps 3 and 6, in train mode
    for stored, x, live in saver.saved:
        assert all(torch.equal(stored[n], x[n]) for n in x)
        assert any(not torch.equal(stored[n], live[n]) for n in x)  # x is not y: the live weights were not moved
    ckpt = torch.load(tmp_path / "ckpt" / "epoch=0-step=6.ckpt", weights_only=True)
    assert all(torch.equal(ckpt["state_dict"][n], saver.saved[1][1][n]) for n in saver.saved[1][1])
    assert [g["train_mode"] for g in ckpt["optimizer_states"][0]["param_groups"]] == [False]
    assert trainer.global_step == BATCHES  # training went on after each save


class Tied(Recorded):
    """An encoder and a decoder sharing one weight, as tied embeddings do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 8, bias=False), nn.ReLU(), nn.Linear(8, 8, bias=False), nn.Linear(8, 2))
        self.net[2].weight = self.net[0].weight


def test_a_shared_weight_is_stored_at_x_under_each_of_its_names(tmp_path):
    every = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    saver, model = SavedWeights(), Tied()
    _fit(tmp_path, model, LRRangeTest(bounds=(0.01, 0.1), progress_bar=False), callbacks=[every, saver])
    ckpt = torch.load(tmp_path / "ckpt" / "epoch=0-step=6.ckpt", weights_only=True)
    x = saver.saved[1][1]["net.0.weight"]
    assert torch.equal(ckpt["state_dict"]["net.0.weight"], x) and torch.equal(ckpt["state_dict"]["net.2.weight"], x)
    assert not torch.equal(x, saver.saved[1][2]["net.0.weight"])  # x, not the live y


@pytest.mark.slow
def test_resume_from_an_epoch_checkpoint_ends_where_an_uninterrupted_run_does(tmp_path):
    every = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1)  # one per epoch, at the end of validation
    whole = Recorded(batch_norm=True)
    finder = LRRangeTest(**FINDER)
    _fit(tmp_path / "whole", whole, finder, max_epochs=2, callbacks=[every], shuffle=False)
    first = tmp_path / "ckpt" / f"epoch=0-step={BATCHES}.ckpt"
    resumed, again = Recorded(batch_norm=True), LRRangeTest(**FINDER)
    trainer = _fit(tmp_path / "resumed", resumed, again, max_epochs=2, ckpt_path=first, shuffle=False)
    assert again.restored and again.result.max_lr == finder.result.max_lr
    group = trainer.optimizers[0].param_groups[0]
    assert group["lr"] == finder.result.max_lr and group["k"] == 2 * BATCHES and group["train_mode"] is False
    assert [c[1] for c in resumed.calls if c[0] == "train" and c[2]] == [True] * BATCHES  # y again from step 1
    for name, value in whole.state_dict().items():  # weights and BatchNorm statistics, at x
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_trains_at_y_from_its_first_step(tmp_path):
    every = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    _fit(tmp_path / "first", Recorded(), LRRangeTest(bounds=(0.01, 0.1), progress_bar=False), callbacks=[every])
    resumed = Recorded()  # no sanity check: the first hook to run is the first training batch's
    trainer = _fit(tmp_path / "again", resumed, LRRangeTest(bounds=(0.01, 0.1), progress_bar=False),
                   ckpt_path=tmp_path / "ckpt" / "epoch=0-step=3.ckpt", num_sanity_val_steps=0)
    modes = [c[1] for c in resumed.calls if c[0] == "train" and c[2]]
    assert modes == [True] * (BATCHES - 3) and trainer.global_step == BATCHES
