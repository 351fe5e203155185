"""Diagnostics never stop training: a full disk or a folder that cannot be written while the range-test
figure, the sweep's scalars, a snapshot file or the flatness probe's scalars are written warns on one line
naming the file and the cause, and ``fit`` goes on with everything kept in memory."""

from __future__ import annotations

import errno
import warnings
from pathlib import Path

import matplotlib.figure
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

import lightning_clr.callbacks.ensemble as ensemble_module
from lightning_clr import FlatnessProbe, LRRangeTest, SnapshotEnsemble, schedules
from tests.helpers import tiny_data, tiny_model, tiny_trainer

STEPS = 16  # optimizer steps per epoch of tiny_data
FAILURES = {"full disk": OSError(errno.ENOSPC, "No space left on device"),
            "read-only folder": PermissionError(errno.EROFS, "Read-only file system")}


def _fit(root: Path, *callbacks, finder: LRRangeTest | None = None, max_epochs: int = 1):
    """One fit with a TensorBoard logger; returns the Trainer, the finder and the warnings it emitted."""
    finder = finder or LRRangeTest(num_steps=30, start_lr=1e-4, end_lr=1.0, progress_bar=False)
    trainer = tiny_trainer(root, max_epochs=max_epochs, callbacks=[finder, *callbacks],
                           logger=TensorBoardLogger(root, name="tb"), log_every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(tiny_model(), datamodule=tiny_data())
    return trainer, finder, [str(w.message) for w in caught]


def _ours(messages: list[str], prefix: str) -> list[str]:
    return [m for m in messages if m.startswith(prefix)]


def _assert_trained_on(trainer, finder: LRRangeTest, epochs: int = 1) -> None:
    """fit ran to its end: every step trained, validation logged, the found bounds in memory."""
    assert trainer.state.finished and trainer.global_step == epochs * STEPS
    assert "val/acc" in trainer.callback_metrics
    assert finder.result is not None and len(finder.result.lrs) >= 10
    assert 0 < finder.result.base_lr < finder.result.max_lr


def _bounds_text(finder: LRRangeTest) -> str:
    return f"training goes on with base_lr={finder.result.base_lr:.4g}, max_lr={finder.result.max_lr:.4g}"


@pytest.mark.parametrize("failure", FAILURES, ids=list(FAILURES))
def test_a_failed_range_test_figure_warns_and_training_goes_on(tmp_path, monkeypatch, failure):
    def savefig(self, fname, *args, **kwargs):
        raise FAILURES[failure]

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    trainer, finder, messages = _fit(tmp_path)
    _assert_trained_on(trainer, finder)
    png = Path(trainer.logger.log_dir) / "range_test.png"
    (line,) = _ours(messages, "LRRangeTest: could not write")
    assert line.startswith(f"LRRangeTest: could not write the range-test figure to '{png}' "
                           f"({FAILURES[failure].strerror}); ")
    assert _bounds_text(finder) in line and "\n" not in line and not png.exists()
    # the other writes of the range test still happened: the curve is in the event file
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("range_test/lr")] == pytest.approx(finder.result.lrs, rel=1e-6)
    assert len(events.Scalars("train/loss_step")) == STEPS


def test_a_failed_figure_in_the_event_file_warns_and_training_goes_on(tmp_path, monkeypatch):
    def add_figure(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_figure", add_figure)
    trainer, finder, messages = _fit(tmp_path)
    _assert_trained_on(trainer, finder)
    (line,) = _ours(messages, "LRRangeTest: could not write")
    assert line.startswith(f"LRRangeTest: could not write the range-test figure (range_test/curve) to "
                           f"'{trainer.logger.log_dir}' (No space left on device); ")
    assert (Path(trainer.logger.log_dir) / "range_test.png").is_file()  # the PNG was written before


def test_failed_sweep_scalars_warn_once_and_training_goes_on(tmp_path, monkeypatch):
    """The logger's write raises for the sweep's scalars (TensorBoardLogger wraps the OSError in a ValueError)."""
    real = SummaryWriter.add_scalar

    def add_scalar(self, tag, *args, **kwargs):
        if tag.startswith("range_test/"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, tag, *args, **kwargs)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    trainer, finder, messages = _fit(tmp_path)
    _assert_trained_on(trainer, finder)
    (line,) = _ours(messages, "LRRangeTest: could not write")
    assert line == (f"LRRangeTest: could not write the range test's curve to '{trainer.logger.log_dir}' (No space "
                    f"left on device); {_bounds_text(finder)} (finder.result keeps the curve)")
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0})
    events.Reload()
    assert len(events.Scalars("train/loss_step")) == STEPS  # the training's own scalars went on being written
    assert "range_test/lr" not in events.Tags()["scalars"]


def test_a_bug_in_a_write_is_not_taken_for_a_full_disk(tmp_path, monkeypatch):
    def savefig(self, fname, *args, **kwargs):
        raise ValueError("a figure with no axes")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    with pytest.raises(ValueError, match="a figure with no axes"):
        _fit(tmp_path)


# ---------------------------------------------------------------------------- snapshot files


def _snapshots_fit(tmp_path: Path, dirpath: Path):
    snapshots = SnapshotEnsemble(dirpath=dirpath)
    finder = LRRangeTest(schedule=schedules.SGDR(cycle_steps=8, cycle_mult=1), bounds=(0.01, 0.2))
    trainer, finder, messages = _fit(tmp_path, snapshots, finder=finder, max_epochs=2)
    assert trainer.state.finished and trainer.global_step == 2 * STEPS
    return trainer, snapshots, _ours(messages, "SnapshotEnsemble: could not write")


def test_a_full_disk_while_a_snapshot_is_written_warns_and_training_goes_on(tmp_path, monkeypatch):
    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04")  # a few bytes, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ensemble_module.torch, "save", save)
    dirpath = tmp_path / "snapshots"
    trainer, snapshots, lines = _snapshots_fit(tmp_path, dirpath)
    assert lines == [f"SnapshotEnsemble: could not write '{dirpath / f'cycle_{k}.pt'}' (No space left on device); the "
                     "snapshot stays in memory and in the ensemble, training goes on (load_ensemble will not find it)"
                     for k in (1, 2, 3, 4)]
    assert [(s.cycle, s.step, s.path) for s in snapshots.snapshots] == [(1, 8, None), (2, 16, None), (3, 24, None),
                                                                         (4, 32, None)]
    assert list(dirpath.iterdir()) == []  # no half-written file left behind
    assert trainer.callback_metrics["ensemble/size"] == 4  # the ensemble was scored from memory
    assert snapshots.state_dict()["snapshots"][0]["path"] is None


def test_a_snapshot_folder_that_cannot_be_made_warns_and_training_goes_on(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    dirpath = tmp_path / "a_file" / "snapshots"
    trainer, snapshots, lines = _snapshots_fit(tmp_path, dirpath)
    assert len(lines) == 4 and all("(Not a directory)" in line for line in lines)
    assert lines[0].startswith(f"SnapshotEnsemble: could not write '{dirpath / 'cycle_1.pt'}' (Not a directory); ")
    assert len(snapshots.snapshots) == 4 and trainer.callback_metrics["ensemble/size"] == 4


# ---------------------------------------------------------------------------- the flatness probe


def test_failed_flatness_scalars_warn_and_training_goes_on(tmp_path, monkeypatch):
    real = SummaryWriter.add_scalar

    def add_scalar(self, tag, *args, **kwargs):
        if tag.startswith("flatness/"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, tag, *args, **kwargs)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    probe = FlatnessProbe(sigmas=[0.1], num_batches=1, num_directions=1, every_n_epochs=1)
    finder = LRRangeTest(bounds=(0.01, 0.1), schedule=schedules.Constant())
    trainer, _, messages = _fit(tmp_path, probe, finder=finder)
    assert trainer.state.finished and trainer.global_step == STEPS
    (line,) = _ours(messages, "FlatnessProbe: could not write")
    assert line == (f"FlatnessProbe: could not write flatness/loss, flatness/sigma_0.1 at step {STEPS} to "
                    f"'{trainer.logger.log_dir}' (No space left on device); training goes on (FlatnessProbe.history "
                    "keeps them)")
    assert [h["step"] for h in probe.history] == [STEPS] and torch.isfinite(torch.tensor(probe.history[0]["flatness/loss"]))
