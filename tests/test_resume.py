"""Exact resume: a stopped, crashed or killed run continues step for step from its checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_clr import LRRangeTest, schedules
from lightning_clr._compat import FIT_WEIGHTS_ONLY
from lightning_clr.data import MNIST1DDataModule
from tests.conftest import SMALL
from tests.helpers import LRRecorder, tiny_data, tiny_model, tiny_trainer

pytestmark = pytest.mark.slow  # resumes: a fit, then another from its checkpoint, many through the CLI

STEPS_PER_EPOCH = 8  # limit_train_batches
EPOCHS = 10
SPECS = {  # each has a cycle boundary inside the resumed part of a 10-epoch run stopped at 5
    "sgdr": lambda: schedules.SGDR(cycle_steps=10, cycle_mult=1.5),  # restarts at 10, 25, 48, 82
    "triangular2": lambda: schedules.Triangular2(step_size=7),  # cycles end at 14, 28, 42, 56, 70
}


class CrashAt(L.Callback):
    """Raises once the global step reaches ``step``: a crash in the middle of an epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"crash at step {self.step}")


def _fit(root: Path, spec: schedules.Schedule, max_epochs: int, callbacks=(), ckpt_path=None, model=None,
         **finder_kwargs):
    L.seed_everything(0, verbose=False)
    finder = LRRangeTest(schedule=spec, num_steps=30, start_lr=1e-4, end_lr=1.0, **finder_kwargs)
    recorder = LRRecorder()
    trainer = tiny_trainer(root, max_epochs=max_epochs, callbacks=[finder, recorder, *callbacks],
                           limit_train_batches=STEPS_PER_EPOCH, limit_val_batches=1,
                           enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks))
    try:
        trainer.fit(model or tiny_model(), datamodule=tiny_data(), ckpt_path=ckpt_path, **FIT_WEIGHTS_ONLY)
    except RuntimeError as err:
        if "crash at step" not in str(err):
            raise
    return trainer, finder, [lrs[0] for lrs in recorder.lrs]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, tuple[list[float], LRRangeTest]]:
    """The LR at every step of an uninterrupted 10-epoch run, per schedule."""
    runs = {}
    for name, spec in SPECS.items():
        _, finder, lrs = _fit(tmp_path_factory.mktemp(name), spec(), EPOCHS)
        runs[name] = (lrs, finder)
    return runs


def _interrupt(tmp_path: Path, spec: schedules.Schedule, where: str) -> tuple[Path, list[float]]:
    """Train part of the run; the checkpoint to resume from and the LRs the first part used."""
    if where == "epoch":  # train 5 epochs, stop, save
        trainer, _, lrs = _fit(tmp_path / "first", spec, EPOCHS // 2)
        path = tmp_path / "epoch5.ckpt"
        trainer.save_checkpoint(path)
    else:  # crash at step 38 of 80; the last checkpoint (every 3 steps) is from step 36, mid-epoch
        every = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_last=True, save_top_k=0)
        _, _, lrs = _fit(tmp_path / "first", spec, EPOCHS, callbacks=[every, CrashAt(38)])
        path = tmp_path / "ckpt" / "last.ckpt"
    return path, lrs


@pytest.mark.parametrize("where", ["epoch", "mid-epoch"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_resumed_lrs_equal_uninterrupted_run(name, where, uninterrupted, tmp_path):
    expected, first_finder = uninterrupted[name]
    assert len(expected) == EPOCHS * STEPS_PER_EPOCH
    path, before = _interrupt(tmp_path, SPECS[name](), where)
    state = torch.load(path, map_location="cpu", **FIT_WEIGHTS_ONLY)  # plain data only
    step = state["global_step"]
    assert step == (40 if where == "epoch" else 36)
    assert before[:step] == expected[:step]
    ends = SPECS[name]().cycle_ends(steps_per_epoch=STEPS_PER_EPOCH, total_steps=len(expected))
    assert any(step < end < len(expected) for end in ends)  # a restart / cycle end lies in the resumed part

    trainer, finder, after = _fit(tmp_path / "resumed", SPECS[name](), EPOCHS, ckpt_path=path)
    assert finder.restored
    # no new sweep: a sweep of the half-trained model would record other losses
    assert finder.result.raw_losses == state["callbacks"]["LRRangeTest"]["result"]["raw_losses"]
    assert (finder.result.base_lr, finder.result.max_lr) == (first_finder.result.base_lr, first_finder.result.max_lr)
    assert trainer.global_step == len(expected)
    assert len(after) == len(expected) - step
    assert before[:step] + after == expected  # every step, exactly


def _checkpoint(tmp_path: Path, spec: schedules.Schedule, max_epochs: int = 1, **kwargs) -> Path:
    trainer, _, _ = _fit(tmp_path / "first", spec, max_epochs, **kwargs)
    path = tmp_path / "first.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_resume_with_another_schedule_or_other_bounds_is_refused(tmp_path):
    path = _checkpoint(tmp_path, schedules.SGDR(cycle_steps=8))
    with pytest.raises(MisconfigurationException, match=r"checkpoint trained with SGDR\(.*cycle_steps=8.*Triangular"):
        _fit(tmp_path / "resumed", schedules.Triangular(step_size=4), 2, ckpt_path=path)
    with pytest.raises(MisconfigurationException, match=r"cycle_steps=8.*cycle_steps=9"):
        _fit(tmp_path / "resumed", schedules.SGDR(cycle_steps=9), 2, ckpt_path=path)
    with pytest.raises(MisconfigurationException, match=r"checkpoint trained between .* asks for bounds=\(0.5, 0.6\)"):
        _fit(tmp_path / "resumed", schedules.SGDR(cycle_steps=8), 2, ckpt_path=path, bounds=(0.5, 0.6))


def test_resume_with_other_group_scales_is_refused(tmp_path):
    spec = schedules.SGDR(cycle_steps=8)
    path = _checkpoint(tmp_path, spec, model=tiny_model(head_lr_scale=10.0))
    with pytest.raises(MisconfigurationException, match=r"LR ratios \[1.0, 10.0\] but this run has \[1.0, 2.0\]; resume with the same group_scales"):
        _fit(tmp_path / "resumed", spec, 2, ckpt_path=path, model=tiny_model(head_lr_scale=10.0), group_scales=[1, 2])
    _, finder, _ = _fit(tmp_path / "same", spec, 2, ckpt_path=path, model=tiny_model(head_lr_scale=10.0),
                        group_scales=[0.5, 5.0])
    assert finder.restored and finder.result.group_ratios == [1.0, 10.0]


def test_resume_of_a_whole_run_schedule_needs_the_same_length(tmp_path):
    path = _checkpoint(tmp_path, schedules.OneCycle(pct_start=0.25))  # planned as 8 steps
    with pytest.raises(MisconfigurationException, match="planned as 8 optimizer steps, but this run has 16"):
        _fit(tmp_path / "resumed", schedules.OneCycle(pct_start=0.25), 2, ckpt_path=path)


@pytest.mark.parametrize("spec, spans_the_run", [
    (schedules.OneCycle(), True), (schedules.Cosine(), True), (schedules.StepDecay(), True),
    (schedules.ExponentialDecay(), True), (schedules.StepDecay(gamma=0.5), False),
    (schedules.ExponentialDecay(gamma=0.99), False), (schedules.SGDR(), True), (schedules.Triangular(), True),
    (schedules.Triangular2(), True), (schedules.ExpRange(), True), (schedules.SGDR(cycle_epochs=1), False),
    (schedules.Triangular(step_epochs=2), False), (schedules.ExpRange(step_size=7), False),
    (schedules.Constant(), False),
], ids=repr)
def test_which_schedules_must_keep_the_run_length_on_resume(spec, spans_the_run):
    """The declared needs_total_steps agrees with what build() does without a run length."""
    assert spec.needs_total_steps == spans_the_run
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    if spans_the_run:
        with pytest.raises(ValueError, match="total_steps|no end"):
            spec.build(optimizer, 0.01, 0.1, steps_per_epoch=10, total_steps=None)
    else:
        spec.build(optimizer, 0.01, 0.1, steps_per_epoch=10, total_steps=None)


def test_a_reused_callback_runs_a_new_range_test_without_checkpoint(tmp_path):
    path = _checkpoint(tmp_path, schedules.Constant())
    finder = LRRangeTest(schedules.Constant(), num_steps=20, start_lr=1e-4, end_lr=1.0)
    kwargs = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 0, "callbacks": [finder]}
    tiny_trainer(tmp_path / "a", **kwargs).fit(tiny_model(), datamodule=tiny_data(), ckpt_path=path)
    assert finder.restored and finder.result.lrs  # the checkpoint's sweep
    finder.result = None
    tiny_trainer(tmp_path / "b", **kwargs).fit(tiny_model(), datamodule=tiny_data())
    assert not finder.restored and len(finder.result.lrs) >= 10  # a fresh sweep


# ---------------------------------------------------------------------------- processes and files


def _cli(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start the real CLI in ``cwd``; stdout and stderr go to ``log`` (a pipe could fill and block it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "lightning_clr.run", *args], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)


RUN = [*SMALL, "finder.num_steps=20", "model=mlp", "trainer.max_epochs=3", "+schedule=sgdr",
       "schedule.cycle_epochs=0.5", "logger=csv", "+callbacks=checkpoint", "callbacks.checkpoint.every_n_train_steps=4"]
CLI_STEPS_PER_EPOCH = 16  # data=synthetic: 512 samples, batch 32
TOTAL_STEPS = 3 * CLI_STEPS_PER_EPOCH  # a multiple of 4: the last checkpoint is the final state


def _run_dir(cwd: Path, seed: int) -> Path | None:
    """The Hydra run directory under ``cwd/outputs`` of the run started with ``seed=<seed>``."""
    found = [p.parents[1] for p in cwd.glob("outputs/*/*/.hydra/overrides.yaml") if f"seed={seed}" in p.read_text()]
    assert len(found) <= 1, found
    return found[0] if found else None


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path, int]:
    """Two CLI runs started at once in one directory; the first is killed with SIGKILL mid-epoch.

    Returns the directory, the killed run's and the finished run's run directories, and the
    global step of the killed run's last checkpoint.
    """
    cwd = tmp_path_factory.mktemp("cwd")
    killed = _cli([*RUN, "seed=1"], cwd, cwd / "killed.log")
    finished = _cli([*RUN, "seed=2"], cwd, cwd / "finished.log")
    try:
        # kill -9 as soon as the first checkpoint of run 1 is in place
        while (run := _run_dir(cwd, 1)) is None or not (run / "checkpoints" / "last.ckpt").exists():
            assert killed.poll() is None, (cwd / "killed.log").read_text()[-3000:]
            time.sleep(0.02)
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait() == -signal.SIGKILL
        assert finished.wait() == 0, (cwd / "finished.log").read_text()[-3000:]
    finally:
        for proc in (killed, finished):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    run_killed, run_finished = _run_dir(cwd, 1), _run_dir(cwd, 2)
    step = torch.load(run_killed / "checkpoints" / "last.ckpt", **FIT_WEIGHTS_ONLY)["global_step"]
    return cwd, run_killed, run_finished, step


def test_two_runs_started_together_write_to_separate_dirs(two_runs):
    cwd, run_killed, run_finished, step = two_runs
    assert run_killed != run_finished  # the run dir name has microseconds
    assert sorted(p.parents[1] for p in cwd.glob("outputs/*/*/checkpoints/last.ckpt")) == sorted(
        [run_killed, run_finished])
    done = torch.load(run_finished / "checkpoints" / "last.ckpt", **FIT_WEIGHTS_ONLY)
    assert done["global_step"] == TOTAL_STEPS and step < TOTAL_STEPS  # neither overwrote the other's file
    for run in (run_killed, run_finished):
        (metrics,) = run.glob("csv/version_*/metrics.csv")
        assert metrics.parent.name == "version_0"  # nobody else's version folder in here
        assert (run / ".hydra" / "config.yaml").exists()


def test_sigkill_mid_epoch_then_resume_to_completion(two_runs, tmp_path):
    cwd, run_killed, _, step = two_runs
    assert 0 < step < TOTAL_STEPS and step % CLI_STEPS_PER_EPOCH != 0  # killed in the middle of an epoch
    killed_state = torch.load(run_killed / "checkpoints" / "last.ckpt", **FIT_WEIGHTS_ONLY)
    resumed_dir, log = tmp_path / "resumed", tmp_path / "resumed.log"
    proc = _cli([*RUN, "seed=1", f"hydra.run.dir={resumed_dir}",
                 f"+ckpt_path={run_killed / 'checkpoints' / 'last.ckpt'}"], cwd, log)
    assert proc.wait() == 0, log.read_text()[-3000:]
    assert "restored from the checkpoint, no range test" in log.read_text()
    final = torch.load(resumed_dir / "checkpoints" / "last.ckpt", **FIT_WEIGHTS_ONLY)
    assert final["global_step"] == TOTAL_STEPS
    assert final["callbacks"]["LRRangeTest"]["result"] == killed_state["callbacks"]["LRRangeTest"]["result"]
    (metrics,) = resumed_dir.glob("csv/version_*/metrics.csv")
    header = metrics.read_text().splitlines()[0].split(",")
    assert "lr" in header and not any(h.startswith("range_test/") for h in header)  # no second sweep


def test_mnist1d_cache_is_written_atomically(tmp_path, monkeypatch):
    """A second run fills the cache while the first is still writing: neither sees a partial file."""
    writes: list[str] = []
    savez = np.savez
    second = MNIST1DDataModule(num_samples=200, data_dir=str(tmp_path))

    def write_slowly(file, **arrays):
        writes.append(Path(file).name)
        savez(file, **arrays)
        if len(writes) == 1:  # the first writer's file is complete but not yet in place
            assert not list(tmp_path.glob("mnist1d-*[0-9a-f].npz"))
            second.setup()  # finds no cache, generates and writes its own

    monkeypatch.setattr(np, "savez", write_slowly)
    first = MNIST1DDataModule(num_samples=200, data_dir=str(tmp_path))
    first.setup()
    (cached,) = tmp_path.iterdir()  # one file, no temporary left behind
    assert cached.name.startswith("mnist1d-") and len(writes) == 2
    assert all(name.endswith(".tmp.npz") and name != cached.name for name in writes)
    reader = MNIST1DDataModule(num_samples=200, data_dir=str(tmp_path))
    reader.setup()  # from the cache: no third write
    assert len(writes) == 2
    x = [m._train.tensors[0] for m in (first, second, reader)]
    assert x[0].shape == (160, 40) and torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
