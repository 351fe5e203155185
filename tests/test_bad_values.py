"""Bad values that must become a clear error or a stated warning before training, and messages that
must name the key and the fix. The ones marked xfail need a change in a module this test file does not
cover; the reason names the file and the change."""

from __future__ import annotations

import math
import subprocess
from functools import partial
from pathlib import Path

import pytest
import torch

from lightning_clr import LRRangeTest, measure_flatness, schedules
from lightning_clr._compat import FIT_WEIGHTS_ONLY
from lightning_clr.models import MLP, Classifier
from tests.helpers import run_cli, tiny_data, tiny_model, tiny_trainer
from tests.test_safety import BASE, ROOT, _cli, _one_error

# id: (overrides, words the error or warning must contain, whether a warning with training instead is acceptable)
CASES = {
    "bounds-near-overflow": (["finder.bounds=[0.001,1e308]"], ["finder.bounds", "1e+308"], False),
    "end-lr-inf": (["finder.end_lr=inf"], ["finder.end_lr", "inf", "e.g. end_lr="], False),
    "sgdr-warmup-longer-than-run": (["+schedule=sgdr", "schedule.warmup_epochs=3"],
                                    ["schedule.warmup_epochs", "3", "max_epochs"], True),
    "step-epochs-beyond-run": (["+schedule=step", "schedule.step_epochs=5"], ["schedule.step_epochs", "5"], True),
    "flatness-sigmas-string": (["+callbacks=flatness", "callbacks.flatness.sigmas='12'"],
                               ["callbacks.flatness.sigmas", "'12'", "[0.05,0.1]"], False),
    "flatness-sigmas-int": (["+callbacks=flatness", "callbacks.flatness.sigmas=1"],
                            ["callbacks.flatness.sigmas", "[0.05,0.1]"], False),
}
OWNERS = {
}


@pytest.fixture(scope="module")
def results(cli_cases) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every case run once, each in a folder of its own, on the shared CLI pool."""
    return cli_cases({name: [*BASE, *case[0]] for name, case in CASES.items()}, PYTHONPATH=str(ROOT))


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason=OWNERS[n])]
                                                  if n in OWNERS else []) for n in CASES])
def test_bad_value_is_an_error_or_a_stated_warning_before_training(name, results):
    _, words, warning_ok = CASES[name]
    proc, cwd = results[name]
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text
    if proc.returncode == 0 and warning_ok:
        lines = [line for line in text.splitlines() if "warn" in line.lower() and all(w in line for w in words)]
        assert lines, text[-3000:]
        return
    assert proc.returncode == 2, text[-3000:]
    line = _one_error(proc)
    for word in words:
        assert word in line, line
    assert not list(cwd.rglob("*.ckpt"))


def test_measure_flatness_refuses_an_infinite_sigma():
    model = tiny_model()
    batch = next(iter(tiny_data_loader()))
    with pytest.raises(ValueError, match="sigmas"):
        measure_flatness(model, [batch], sigmas=[math.inf])


def tiny_data_loader():
    dm = tiny_data()
    dm.setup("fit")
    return dm.train_dataloader()


def test_sgdr_warmup_longer_than_the_run_names_the_warmup():
    spec = schedules.SGDR(warmup_epochs=20)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(Exception, match=r"warmup_epochs=20.*(lower|train longer)") as err:
        spec.build(optimizer, 0.01, 0.1, steps_per_epoch=16, total_steps=32)
    assert "-" not in str(err.value).split("optimizer steps")[0][-8:]


def test_a_zero_lr_param_group_names_the_setting_to_fix(tmp_path):
    torch.manual_seed(0)
    model = Classifier(MLP(40, 4, hidden=(32,)), partial(torch.optim.SGD, lr=0.1), num_classes=4, head_lr_scale=0.0)
    finder = LRRangeTest(bounds=(0.01, 0.1), schedule=schedules.Triangular(step_size=4))
    trainer = tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=0, callbacks=[finder])
    with pytest.raises(Exception, match=r"param group 1.*(head_lr_scale|group_scales)"):
        trainer.fit(model, datamodule=tiny_data())


# ---------------------------------------------------------------------------- compare and ensembles


def _tensorboard_run(root: Path) -> Path:
    from lightning.pytorch.loggers import TensorBoardLogger

    trainer = tiny_trainer(root, max_epochs=3, limit_train_batches=4, limit_val_batches=2,
                           logger=TensorBoardLogger(root / "run", name="tensorboard"),
                           callbacks=[LRRangeTest(bounds=(0.01, 0.1), schedule=schedules.Triangular(step_size=2))])
    trainer.fit(tiny_model(), datamodule=tiny_data())
    return root / "run"


def _compare(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, module="lightning_clr.cli.compare")


@pytest.mark.slow
def test_compare_says_when_an_event_file_lost_its_tail(tmp_path):
    run = _tensorboard_run(tmp_path)
    (events,) = run.rglob("events.out.tfevents.*")
    data = events.read_bytes()
    events.write_bytes(data[: len(data) - 20])  # the writer was killed in the middle of its last record
    proc = _compare([str(run), "--png", str(tmp_path / "c.png")], tmp_path)
    assert "Traceback" not in proc.stderr
    assert events.name in proc.stderr and ("truncated" in proc.stderr or "ends early" in proc.stderr), proc.stderr


@pytest.mark.slow
def test_compare_names_a_garbage_event_file(tmp_path):
    folder = tmp_path / "run" / "tensorboard" / "version_0"
    folder.mkdir(parents=True)
    (folder / "events.out.tfevents.1.host.1.0").write_bytes(b"not an event file")
    proc = _compare([str(tmp_path / "run"), "--png", str(tmp_path / "c.png")], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "events.out.tfevents.1.host.1.0" in proc.stderr, proc.stderr


def test_a_snapshot_ensemble_across_a_resume_loads_every_member(tmp_path):
    from lightning_clr import SnapshotEnsemble, load_ensemble

    def fit(max_epochs, dirpath, ckpt_path=None):
        snapshots = SnapshotEnsemble(dirpath=dirpath)
        finder = LRRangeTest(bounds=(0.01, 0.1), schedule=schedules.SGDR(cycle_steps=4, cycle_mult=1))
        trainer = tiny_trainer(tmp_path, max_epochs=max_epochs, limit_train_batches=8, limit_val_batches=2,
                               callbacks=[finder, snapshots])
        trainer.fit(tiny_model(), datamodule=tiny_data(), ckpt_path=ckpt_path, **FIT_WEIGHTS_ONLY)
        return trainer, snapshots

    trainer, first = fit(1, tmp_path / "a")
    trainer.save_checkpoint(tmp_path / "epoch1.ckpt")
    assert len(first.snapshots) == 2
    _, resumed = fit(2, tmp_path / "b", tmp_path / "epoch1.ckpt")
    assert len(resumed.snapshots) == 4  # what ensemble/size reports
    assert len(load_ensemble(tiny_model(), resumed.dirpath).members) == 4


def test_a_resume_with_another_batch_size_is_refused(tmp_path):
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    def fit(batch_size, max_epochs, ckpt_path=None):
        finder = LRRangeTest(bounds=(0.01, 0.1), schedule=schedules.SGDR(cycle_epochs=1, cycle_mult=1))
        trainer = tiny_trainer(tmp_path, max_epochs=max_epochs, limit_val_batches=0, callbacks=[finder])
        trainer.fit(tiny_model(), datamodule=tiny_data(batch_size=batch_size), ckpt_path=ckpt_path, **FIT_WEIGHTS_ONLY)
        return trainer

    fit(32, 1).save_checkpoint(tmp_path / "epoch1.ckpt")  # 16 steps per epoch: one SGDR cycle per 16 steps
    with pytest.raises(MisconfigurationException, match=r"epochs of 16 optimizer steps .* this run has 8 per epoch"):
        fit(64, 2, tmp_path / "epoch1.ckpt")  # 8 steps per epoch: the cycle would silently halve


@pytest.mark.slow
@pytest.mark.parametrize("data", [
    ["data.num_train=1", "data.num_val=1", "data.batch_size=2000"],  # one sample, a batch larger than the set
    ["data.num_train=3", "data.batch_size=2"],  # a last batch of one
], ids=["one-sample", "ragged"])
def test_a_tiny_dataset_trains_to_the_end(data, tmp_path):
    """No ZeroDivisionError on tiny data: the sweep cycles the loader, the schedule fits one-step epochs."""
    proc = _cli(["data=synthetic", *data, "model=mlp", "trainer.max_epochs=1", "finder.num_steps=20",
                 "trainer.enable_progress_bar=false", "logger=csv"], tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "final: val/acc=" in proc.stdout and "bounds: base_lr=" in proc.stdout


@pytest.mark.slow
def test_too_few_mnist1d_samples_is_one_line(tmp_path):
    proc = _cli(["data.num_samples=5", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"], tmp_path)
    assert proc.returncode == 2
    assert _one_error(proc) == "error: data.num_samples must be >= 20, got 5"
