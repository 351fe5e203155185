"""Range-test faults: a broken model, a flat curve, a curve too short to read, divergence mid-sweep,
and explicit bounds that skip the test."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger

from lightning_clr import LRRangeTest, RangeTestError
from lightning_clr.cli.main import _report, train
from lightning_clr.models import MLP, Classifier
from lightning_clr.range_test import callback as range_test
from tests.conftest import SMALL, compose_config
from tests.helpers import LRRecorder, tiny_data, tiny_trainer


class Faulty(Classifier):
    """A tiny classifier whose loss misbehaves on purpose.

    Args:
        above: once the LR of the first param group exceeds this, the loss is multiplied by
            ``factor`` (``nan`` makes it non-finite, ``100`` makes it diverge).
        factor: see ``above``.
        flat: the logits ignore the input and the weights: the loss is ``log(4)`` at every LR.
        nan_after: the loss is NaN from this training-step call on (counted from 0).
    """

    def __init__(self, above: float = math.inf, factor: float = 1.0, flat: bool = False, nan_after: int | None = None):
        torch.manual_seed(0)
        super().__init__(MLP(40, 4, hidden=(32,)), partial(torch.optim.SGD, lr=0.1, momentum=0.9), num_classes=4)
        self.above, self.factor, self.flat, self.nan_after = above, factor, flat, nan_after
        self.calls = 0

    def training_step(self, batch, batch_idx):
        self.calls += 1
        if self.flat:
            _, y = batch
            logits = torch.zeros(len(y), 4) + 0.0 * sum(p.sum() for p in self.parameters())
            return torch.nn.functional.cross_entropy(logits, y)
        loss = super().training_step(batch, batch_idx)
        if self.nan_after is not None and self.calls > self.nan_after:
            return loss * math.nan
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        return loss * self.factor if lr > self.above else loss


def _fit(tmp_path, model, **finder_kwargs):
    finder = LRRangeTest(**{"num_steps": 60, "start_lr": 1e-4, "end_lr": 10.0, "max_extensions": 0, **finder_kwargs})
    recorder = LRRecorder()
    logger = CSVLogger(tmp_path, name="csv")
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=8, limit_val_batches=1,
                           callbacks=[finder, recorder], logger=logger, enable_checkpointing=True)
    trainer.fit(model, datamodule=tiny_data())
    return trainer, finder, [lrs[0] for lrs in recorder.lrs]


def test_nan_at_the_first_step_is_an_error_before_any_training(tmp_path):
    model = Faulty(nan_after=0)
    with pytest.raises(RangeTestError, match=r"not finite at the first range-test step \(lr=0.0001\)"):
        _fit(tmp_path, model)
    assert model.calls == 1  # one sweep step, no training step
    assert not list(tmp_path.rglob("*.ckpt"))


def _hparams(trainer) -> dict:
    return yaml.safe_load((Path(trainer.logger.log_dir) / "hparams.yaml").read_text())


def test_flat_curve_falls_back_to_the_low_end_and_says_so(tmp_path, capsys):
    with pytest.warns(UserWarning, match="LRRangeTest: flat curve"):
        trainer, finder, lrs = _fit(tmp_path, Faulty(flat=True))
    result = finder.result
    assert result.stop_reason == "completed" and len(result.lrs) == 60
    assert result.fallback.startswith("flat curve") and "low end of the sweep" in result.fallback
    assert result.base_lr == pytest.approx(1e-4) and result.max_lr == pytest.approx(4e-4)  # lrs[0], 4 * lrs[0]
    assert all(1e-4 <= lr <= 4e-4 * (1 + 1e-9) for lr in lrs)  # trains between the fallback bounds
    assert _hparams(trainer)["range_test/fallback"] == result.fallback  # logged next to the bounds
    _report(trainer, finder, {})
    assert f"fallback: {result.fallback}" in capsys.readouterr().out


def test_curve_too_short_to_read_falls_back(tmp_path):
    with pytest.warns(UserWarning, match="only 3 finite point"):
        _, finder, _ = _fit(tmp_path, Faulty(nan_after=3))  # NaN from the 4th sweep step on
    result = finder.result
    assert result.stop_reason == "non-finite loss" and len(result.lrs) == 3
    assert "fewer than min_points" in result.fallback
    assert result.base_lr == pytest.approx(result.lrs[0]) and result.max_lr == pytest.approx(result.lrs[-1])


@pytest.mark.parametrize("factor, stop", [(math.nan, "non-finite loss"), (100.0, "diverged")], ids=["nan", "x100"])
def test_divergence_mid_sweep_uses_the_valid_part(factor, stop, tmp_path):
    limit = 0.3
    trainer, finder, lrs = _fit(tmp_path, Faulty(above=limit, factor=factor), divergence_threshold=4.0)
    result = finder.result
    assert result.stop_reason == stop
    valid = [lr for lr in result.lrs if lr <= limit]
    assert len(valid) >= 40  # the sweep got well past the start before it broke
    if stop == "non-finite loss":
        assert result.lrs == valid  # the non-finite point is not on the curve
    else:
        assert len(valid) < len(result.lrs) <= len(valid) + 3  # the smoothed loss trips the threshold at once
    assert result.lrs[0] <= result.base_lr < result.max_lr <= limit  # bounds from the valid part only
    assert max(lrs) <= result.max_lr * (1 + 1e-9) and math.isfinite(trainer.callback_metrics["train/loss_epoch"])


def test_explicit_bounds_skip_the_range_test(tmp_path, monkeypatch, capsys):
    def no_sweep(*args, **kwargs):
        raise AssertionError("the range test ran although bounds were given")

    monkeypatch.setattr(range_test, "run_sweep", no_sweep)
    overrides = [*SMALL, "trainer.max_epochs=1", "logger=csv", "finder.bounds=[0.01,0.1]",
                 "+schedule=triangular", "schedule.step_size=4"]
    metrics = train(compose_config(overrides, tmp_path))
    assert "bounds: base_lr=0.01 max_lr=0.1 (rule=explicit, 0 sweep steps, explicit bounds)" in capsys.readouterr().out
    assert math.isfinite(metrics["train/loss_epoch"])
    (csv,) = tmp_path.rglob("metrics.csv")
    header = csv.read_text().splitlines()[0].split(",")
    lrs = [float(row.split(",")[header.index("lr")]) for row in csv.read_text().splitlines()[1:]
           if row.split(",")[header.index("lr")]]
    assert lrs and all(0.01 <= lr <= 0.1 for lr in lrs) and not any(h.startswith("range_test/") for h in header)
