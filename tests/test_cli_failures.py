"""The command line's run lifecycle: a failure before training frees the run folder, one training per
folder under every launcher, a non-finite validation loss stops the run, user mistakes are one line,
and a diagnostic that cannot be written never stops training.

Most cases call the real entry point in this process (:func:`run_cli`); the YAML tag case starts
``python -m lightning_clr.run`` itself, since what the user sees there is Hydra's own report.
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from lightning_clr.cli import rundir
from lightning_clr.cli.main import cli, train
from lightning_clr.cli.rundir import JOB_ENV, OWNER_FILE, SWEEP_ENV, RunDirInUse, claim, job_id, release
from lightning_clr.models import Classifier
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]
#: a tiny run: explicit bounds skip the range test, one epoch of 16 steps
TINY = ["data=synthetic", "model=mlp", "finder.bounds=[0.01,0.1]", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "logger=csv"]
#: what a launcher may set; each test starts without any of it
LAUNCH_ENV = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_STEP_ID", "SLURM_PROCID",
              "SLURM_RESTART_COUNT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "RANK", "LOCAL_RANK",
              "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_LOCAL_JOB_ID", "SUBMITIT_LOCAL_GLOBALID",
              JOB_ENV, SWEEP_ENV, "HYDRA_FULL_ERROR")


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run_cli(monkeypatch, capfd, tmp_path):
    """``run_cli(args)``: ``python -m lightning_clr.run ARGS`` in this process, as a new process would run it.

    Returns ``(exit status, stdout, stderr)``.
    """
    monkeypatch.chdir(tmp_path)

    def run(args: list[str]) -> tuple[int, str, str]:
        for name in (JOB_ENV, SWEEP_ENV):  # a new process: no job id inherited from an earlier call
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(sys, "argv", ["lightning_clr.run", *args])
        capfd.readouterr()
        status: Any = 0
        try:
            cli()
        except SystemExit as err:
            status = err.code
        finally:
            GlobalHydra.instance().clear()
        out, err = capfd.readouterr()
        return (status if isinstance(status, int) else 0 if status is None else 1), out, err

    return run


def _one_error(status: int, err: str, expected: int = 2) -> str:
    assert status == expected, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    assert "\x1b" not in lines[0]
    return lines[0]


# ---------------------------------------------------------------------------- 1. a failure before training


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["preflight", "bad-value", "in-fit"])
def test_a_run_that_fails_before_training_leaves_its_folder_to_the_corrected_command(failure, run_cli, tmp_path,
                                                                                      monkeypatch):
    run = tmp_path / "run"
    if failure == "preflight":  # $TMPDIR cannot be created: a file stands where its parent should be
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("TMPDIR", str(tmp_path / "file" / "tmp"))
        status, _, err = run_cli([*TINY, f"hydra.run.dir={run}"])
        assert "error: TMPDIR=" in _one_error(status, err)
        monkeypatch.delenv("TMPDIR")
    elif failure == "bad-value":
        status, _, err = run_cli([*TINY, "finder.start_lr=-1", f"hydra.run.dir={run}"])
        assert "start_lr" in _one_error(status, err)
    else:  # inside fit, after the logger made its folder: the range test finds no training batch
        status, _, err = run_cli([*TINY, "+trainer.limit_train_batches=0", f"hydra.run.dir={run}"])
        assert "the train dataloader gives no batch" in _one_error(status, err)
    assert (run / ".hydra" / "config.yaml").is_file() and not list(run.rglob("*.csv"))
    assert sorted(p.name for p in run.iterdir()) == [".hydra", ".job", "main.log"]  # no empty log folder left

    status, out, err = run_cli([*TINY, f"hydra.run.dir={run}"])
    assert status == 0, err[-3000:]
    assert "final: val/acc=" in out
    assert [p.parent.name for p in run.rglob("metrics.csv")] == ["version_0"]  # the first version, not the next
    with pytest.raises(RunDirInUse, match="belongs to another job"):  # the corrected run keeps its folder
        claim(run)


@pytest.mark.slow
def test_a_run_that_failed_during_training_keeps_its_folder(run_cli, tmp_path):
    run = tmp_path / "run"
    status, _, err = run_cli([*TINY, f"hydra.run.dir={run}", "model._target_=tests.faulty_models.NaNFromStep",
                              "+model.nan_from_step=5"])
    assert "training loss is nan at optimizer step 5" in _one_error(status, err, expected=1)
    status, _, err = run_cli([*TINY, f"hydra.run.dir={run}"])
    assert f"hydra.run.dir={run} belongs to another job" in _one_error(status, err)


def test_only_a_log_folder_with_nothing_but_what_a_logger_writes_before_training_is_removed(tmp_path):
    from lightning_clr.cli.main import _remove_unused

    unused, used = tmp_path / "tb" / "version_0", tmp_path / "csv" / "version_0"
    for folder in (unused, used):
        folder.mkdir(parents=True)
        (folder / "hparams.yaml").write_text("lr: 0.1\n")
        (folder / "events.out.tfevents.1.vm.1.0").write_bytes(b"")
    (used / "checkpoints").mkdir()
    (used / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    _remove_unused([tmp_path / "tb", tmp_path / "csv", tmp_path / "never-made"])
    assert not (tmp_path / "tb").exists()
    assert (used / "checkpoints" / "last.ckpt").read_bytes() == b"weights" and (used / "hparams.yaml").is_file()


def test_release_frees_only_a_folder_of_this_job(tmp_path, monkeypatch):
    me = claim(tmp_path / "mine")
    assert release(tmp_path / "mine") and release(tmp_path / "mine")  # idempotent
    monkeypatch.setenv(JOB_ENV, "local:someone-else")
    claim(tmp_path / "theirs")
    monkeypatch.setenv(JOB_ENV, me)
    assert not release(tmp_path / "theirs") and not release(tmp_path / "nowhere")
    assert not release(None)
    monkeypatch.setenv(JOB_ENV, "local:a-third-job")
    assert claim(tmp_path / "mine") == "local:a-third-job"  # the released folder is free
    with pytest.raises(RunDirInUse, match=r"belongs to another job \(local:someone-else"):
        claim(tmp_path / "theirs")


# ---------------------------------------------------------------------------- 2. one training per folder


def _as_process(monkeypatch, pid: int, **env: str) -> None:
    """Act as another process (pid ``pid``) with the launcher variables ``env`` and nothing inherited."""
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(rundir, "_process", lambda: ("node0", pid))


def test_slurm_ranks_share_a_folder_and_a_second_training_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "slurm"
    for rank in range(4):  # one srun step, four tasks: the ranks of one DDP job
        _as_process(monkeypatch, 100 + rank, SLURM_JOB_ID="7", SLURM_STEP_ID="0", SLURM_PROCID=str(rank))
        assert claim(folder) == "slurm:7.0"
    _as_process(monkeypatch, 200, SLURM_JOB_ID="7", SLURM_STEP_ID="1", SLURM_PROCID="0")  # srun again, same job
    with pytest.raises(RunDirInUse, match=r"belongs to another job \(slurm:7.0, started"):
        claim(folder)
    _as_process(monkeypatch, 300, SLURM_JOB_ID="7", SLURM_STEP_ID="0", SLURM_PROCID="0")  # same step, later
    with pytest.raises(RunDirInUse, match=r"already holds a training of this job \(slurm:7.0, process 0.0"):
        claim(folder)
    _as_process(monkeypatch, 400, SLURM_JOB_ID="8", SLURM_PROCID="0")
    with pytest.raises(RunDirInUse, match="belongs to another job"):
        claim(folder)
    # requeued: the same job, restarted, in a step of any number, continues in its folder
    _as_process(monkeypatch, 500, SLURM_JOB_ID="7", SLURM_STEP_ID="3", SLURM_PROCID="0", SLURM_RESTART_COUNT="1")
    assert claim(folder) == "slurm:7.3"
    _as_process(monkeypatch, 501, SLURM_JOB_ID="7", SLURM_STEP_ID="3", SLURM_PROCID="1", SLURM_RESTART_COUNT="1")
    assert claim(folder) == "slurm:7.3"


def test_slurm_array_tasks_and_batch_scripts_are_separate_trainings(tmp_path, monkeypatch):
    _as_process(monkeypatch, 100, SLURM_JOB_ID="11", SLURM_ARRAY_JOB_ID="10", SLURM_ARRAY_TASK_ID="1")
    assert claim(tmp_path / "a") == "slurm:10_1"
    _as_process(monkeypatch, 101, SLURM_JOB_ID="12", SLURM_ARRAY_JOB_ID="10", SLURM_ARRAY_TASK_ID="2")
    with pytest.raises(RunDirInUse, match=r"another job \(slurm:10_1"):
        claim(tmp_path / "a")
    # a batch script that runs two trainings one after the other, without srun
    _as_process(monkeypatch, 102, SLURM_JOB_ID="13", SLURM_PROCID="0")
    claim(tmp_path / "b")
    _as_process(monkeypatch, 103, SLURM_JOB_ID="13", SLURM_PROCID="0")
    with pytest.raises(RunDirInUse, match="already holds a training of this job"):
        claim(tmp_path / "b")


def test_torchrun_workers_share_a_folder_and_a_second_rendezvous_is_refused(tmp_path, monkeypatch):
    env = {"TORCHELASTIC_RUN_ID": "exp1", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    for rank in range(2):
        _as_process(monkeypatch, 100 + rank, **env, RANK=str(rank), LOCAL_RANK=str(rank))
        assert claim(tmp_path / "t") == "torchrun:exp1"
    _as_process(monkeypatch, 200, **env, RANK="0", LOCAL_RANK="0")  # torchrun again with the same --rdzv-id
    with pytest.raises(RunDirInUse, match="already holds a training of this job"):
        claim(tmp_path / "t")
    _as_process(monkeypatch, 300, **{**env, "MASTER_PORT": "29611"}, RANK="0", TORCHELASTIC_RESTART_COUNT="1")
    assert claim(tmp_path / "t") == "torchrun:exp1"  # a restarted worker, on the new rendezvous's port
    none = {"TORCHELASTIC_RUN_ID": "none", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    assert job_id(none) == "torchrun:node0:29500:none" == job_id({**none, "LOCAL_RANK": "3"})


def test_lightnings_ddp_workers_join_and_a_plain_second_run_is_refused(tmp_path, monkeypatch):
    _as_process(monkeypatch, 100)
    me = claim(tmp_path / "p")
    assert me.startswith("local:") and os.environ[JOB_ENV] == me  # what the workers inherit
    _as_process(monkeypatch, 101, **{JOB_ENV: me, "LOCAL_RANK": "1", "NODE_RANK": "0"})
    assert claim(tmp_path / "p") == me
    _as_process(monkeypatch, 102)
    with pytest.raises(RunDirInUse, match="belongs to another job"):
        claim(tmp_path / "p")


def test_submitit_local_tasks_share_their_jobs_folder(tmp_path, monkeypatch):
    for task in range(2):  # one job, two tasks (tasks_per_node=2)
        _as_process(monkeypatch, 100 + task, SUBMITIT_LOCAL_JOB_ID="4711", SUBMITIT_LOCAL_GLOBALID=str(task))
        assert claim(tmp_path / "s") == "submitit-local:4711"
    _as_process(monkeypatch, 200, SUBMITIT_LOCAL_JOB_ID="4712", SUBMITIT_LOCAL_GLOBALID="0")
    with pytest.raises(RunDirInUse, match=r"another job \(submitit-local:4711"):
        claim(tmp_path / "s")


@pytest.mark.slow
def test_a_submitit_local_multirun_gives_each_job_its_folder_and_refuses_one_for_all(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["PYTHONPATH"] = str(ROOT)

    def multirun(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lightning_clr.run", "-m", "hydra/launcher=submitit_local",
                               *TINY, "seed=1,2", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              check=False)

    proc = multirun(f"hydra.sweep.dir={tmp_path / 'one'}", "hydra.sweep.subdir=same")
    line = _one_error(proc.returncode, proc.stderr)
    assert line.startswith("error: hydra.sweep.subdir=same: every job of this multirun would write into")
    assert not (tmp_path / "one").exists()
    proc = multirun(f"hydra.sweep.dir={tmp_path / 'each'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {p.parent.name: json.loads(p.read_text())["job"] for p in (tmp_path / "each").glob(f"*/{OWNER_FILE}")}
    sweep = json.loads((tmp_path / "each" / OWNER_FILE).read_text())["job"]
    assert jobs == {"0": f"{sweep}/0", "1": f"{sweep}/1"}
    assert len(list((tmp_path / "each").glob("*/csv/version_0/metrics.csv"))) == 2


@pytest.mark.slow
def test_an_interpolated_subdir_that_names_one_folder_for_two_jobs_is_refused_before_any_job(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    status, _, err = run_cli(["-m", *TINY, "seed=1,2", f"hydra.sweep.dir={sweep}",
                              "hydra.sweep.subdir=e${trainer.max_epochs}"])
    assert _one_error(status, err) == (
        f"error: hydra.sweep.subdir=e${{trainer.max_epochs}}: jobs 0 and 1 of this multirun would both write into "
        f"{sweep / 'e1'}; make it differ per job, e.g. hydra.sweep.subdir=${{hydra.job.num}} (the default)")
    assert not sweep.exists()  # before any job ran, or the sweep folder was claimed
    status, _, err = run_cli(["-m", *TINY, "seed=1,2", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=s${seed}"])
    assert status == 0, err[-3000:]
    assert sorted(p.parent.name for p in sweep.glob(f"*/{OWNER_FILE}")) == ["s1", "s2"]


def test_a_job_folder_another_job_of_the_multirun_took_names_both_jobs(tmp_path, monkeypatch):
    # what each job's own claim says where a sweeper picks its jobs as it goes (nothing to resolve before)
    claim(tmp_path / "same", "hydra.sweep.subdir", earlier_runs=False, job="local:sweep-1/0")
    with pytest.raises(RunDirInUse) as err:
        claim(tmp_path / "same", "hydra.sweep.subdir", earlier_runs=False, job="local:sweep-1/3")
    assert str(err.value).startswith(f"hydra.sweep.subdir={tmp_path / 'same'} is the folder of job 0 of this multirun; "
                                     "job 3 lands there too: make hydra.sweep.subdir differ per job")


def test_a_run_folder_that_links_into_another_run_is_refused(tmp_path, monkeypatch):
    _as_process(monkeypatch, 100)
    claim(tmp_path / "first")
    (tmp_path / "link").symlink_to(tmp_path / "first")
    _as_process(monkeypatch, 101)
    with pytest.raises(RunDirInUse) as err:
        claim(tmp_path / "link")
    assert str(err.value).startswith(f"hydra.run.dir={tmp_path / 'link'} (a link to {tmp_path / 'first'}) belongs "
                                     "to another job")


@pytest.mark.slow
def test_a_checkpoint_folder_linked_into_another_run_is_refused(run_cli, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    status, _, err = run_cli([*TINY, f"hydra.run.dir={first}", "+callbacks=checkpoint"])
    assert status == 0, err[-3000:]
    before = {p: p.read_bytes() for p in (first / "checkpoints").iterdir()}
    assert list(before) == [first / "checkpoints" / "last.ckpt"]
    second.mkdir()
    (second / "checkpoints").symlink_to(first / "checkpoints")
    status, out, err = run_cli([*TINY, f"hydra.run.dir={second}", "+callbacks=checkpoint"])
    line = _one_error(status, err)
    assert line.startswith(f"error: callbacks.checkpoint.dirpath={second / 'checkpoints'} (a link to "
                           f"{first / 'checkpoints'}) lies in {first}, the run folder of another job")
    assert "remove the link" in line and "final:" not in out
    assert {p: p.read_bytes() for p in (first / "checkpoints").iterdir()} == before  # no last-v1.ckpt
    assert not list(second.rglob("metrics.csv"))


def test_a_multirun_with_one_subdir_for_all_jobs_is_refused_before_any_job(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    status, _, err = run_cli(["-m", *TINY, "seed=1,2", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=same"])
    line = _one_error(status, err)
    assert line == (f"error: hydra.sweep.subdir=same: every job of this multirun would write into {sweep / 'same'}; "
                    "make it differ per job, e.g. hydra.sweep.subdir=${hydra.job.num} (the default)")
    assert not sweep.exists()



# ---------------------------------------------------------------------------- 3. non-finite validation loss


class NaNValidation(Classifier):
    """The shipped classifier whose validation inputs are NaN from epoch ``nan_from_epoch`` on (0-based)."""

    def __init__(self, nan_from_epoch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_from_epoch = nan_from_epoch

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        if not self.trainer.sanity_checking and self.current_epoch >= self.nan_from_epoch:
            x = x * math.nan
        return super().validation_step((x, y), batch_idx)


@pytest.mark.slow
def test_a_non_finite_validation_loss_ends_the_run_on_one_line(run_cli, tmp_path):
    run = tmp_path / "run"
    status, out, err = run_cli([*TINY, "trainer.max_epochs=4", f"hydra.run.dir={run}", "+callbacks=checkpoint",
                                "callbacks.checkpoint.every_n_train_steps=8",
                                "model._target_=tests.test_cli_failures.NaNValidation", "+model.nan_from_epoch=1"])
    line = _one_error(status, err, expected=1)
    assert line.startswith("error: validation loss val/loss is nan at epoch 1 (optimizer step 32); training stopped")
    last = run / "checkpoints" / "last.ckpt"
    assert f"the last finite checkpoint is {last.resolve()} (optimizer step 32)" in line
    assert "final:" not in out and torch.load(last, weights_only=True)["global_step"] == 32  # no epoch 2


def test_only_validation_losses_are_checked_by_name():
    from lightning_clr.cli.faults import is_validation_loss

    names = ["val/loss", "val_loss", "valid_loss_epoch", "validation/loss", "val/acc", "train/loss", "gap/loss",
             "interval_loss", "val/lossy"]
    assert [n for n in names if is_validation_loss(n)] == ["val/loss", "val_loss", "valid_loss_epoch",
                                                           "validation/loss"]


# ---------------------------------------------------------------------------- 4. user mistakes on one line


@pytest.mark.slow
def test_a_python_tag_in_a_config_file_is_one_line_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "myconf" / "model").mkdir(parents=True)
    (tmp_path / "myconf" / "model" / "evil.yaml").write_text(
        "_target_: lightning_clr.models.Classifier\n"
        f"net: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    proc = subprocess.run([sys.executable, "-m", "lightning_clr.run", "--config-dir", "myconf", "model=evil",
                           *TINY[:1], f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True,
                          text=True, env={**env, "PYTHONPATH": str(ROOT)}, check=False)
    line = _one_error(proc.returncode, proc.stderr)
    assert line == (f"error: {tmp_path / 'myconf' / 'model' / 'evil.yaml'}, line 2: the tag "
                    "!!python/object/apply:os.system is refused, a config holds plain YAML data and no Python "
                    "objects; write the value as a number, string or list, or as a node with _target_")
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_accumulate_grad_batches_zero_is_one_line_before_anything_runs(run_cli, tmp_path):
    status, _, err = run_cli([*TINY, "trainer.accumulate_grad_batches=0", f"hydra.run.dir={tmp_path / 'run'}"])
    assert _one_error(status, err) == (
        "error: trainer.accumulate_grad_batches=0: must be an integer >= 1 (the batches whose gradients add up to "
        "one optimizer step); use 1 to step after every batch")
    assert not list((tmp_path / "run").rglob("*.csv"))


class FloatLoss(Classifier):
    """The shipped classifier whose ``training_step`` returns the loss as a Python float."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        return float(super().training_step(batch, batch_idx).detach())


class DetachedLoss(Classifier):
    """The shipped classifier whose ``training_step`` returns a loss tensor without grad."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        return super().training_step(batch, batch_idx).detach()


@pytest.mark.parametrize("module", ["FloatLoss", "DetachedLoss"])
def test_a_loss_without_grad_is_one_line_with_exit_2(module, run_cli, tmp_path):
    status, _, err = run_cli(["data=synthetic", "model=mlp", f"model._target_=tests.test_cli_failures.{module}",
                              "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=csv",
                              f"hydra.run.dir={tmp_path / 'run'}"])
    line = _one_error(status, err)
    assert "training_step" in line, line
    assert not list((tmp_path / "run").rglob("*.ckpt"))


# ---------------------------------------------------------------------------- 5. diagnostics never stop training


@pytest.mark.parametrize("logger, damage", [("tensorboard", "directory"), ("csv", "disk-full")])
def test_an_hparams_file_that_cannot_be_written_warns_and_the_run_ends_normally(logger, damage, tmp_path,
                                                                                 monkeypatch):
    overrides = [*TINY, f"logger={logger}", "+logger.version=0"]
    if damage == "directory":  # TensorBoardLogger writes hparams.yaml at the end of fit  # a folder stands where hparams.yaml goes
        (tmp_path / logger / "version_0" / "hparams.yaml").mkdir(parents=True)
        words = "Is a directory"
    else:  # CSVLogger writes it whenever hyperparameters are logged: the range test logs its bounds
        overrides = [o for o in overrides if not o.startswith("finder.bounds")] + ["finder.num_steps=20"]
        from lightning.pytorch.loggers import csv_logs

        def full(*args: Any, **kwargs: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(csv_logs, "save_hparams_to_yaml", full)
        words = "No space left on device"
    with pytest.warns(UserWarning, match=rf"{'TensorBoardLogger' if logger == 'tensorboard' else 'CSVLogger'} "
                                         rf"could not write .*\({words}\); training goes on without it") as record:
        metrics = train(compose_config(overrides, tmp_path))
    assert math.isfinite(metrics["val/loss"]) and metrics["val/acc"] > 0.3
    assert len([w for w in record if "could not write" in str(w.message)]) == 1  # once, not at every save
    if logger == "csv":
        rows = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
        assert len(rows) > 2 and "val/loss" in rows[0]  # the metrics were still written


@pytest.mark.parametrize("path", ["../../../etc/passwd", "/tmp/somewhere/else.pt"], ids=["dotdot", "foreign-name"])
def test_a_crafted_snapshot_path_in_a_checkpoint_is_one_line_with_exit_2(path, run_cli, tmp_path):
    first = tmp_path / "first"
    args = [*TINY, "trainer.max_epochs=2", "+schedule=sgdr", "schedule.cycle_epochs=1", "+callbacks=[snapshot,checkpoint]"]
    status, _, err = run_cli([*args, f"hydra.run.dir={first}"])
    assert status == 0, err[-3000:]
    ckpt = first / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    (key,) = [k for k in checkpoint["callbacks"] if k.startswith("SnapshotEnsemble")]
    entries = checkpoint["callbacks"][key]["snapshots"]
    assert entries, "the first run saved no snapshot to tamper with"
    entries[0]["path"] = path
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    status, _, err = run_cli([*args, "trainer.max_epochs=3", f"+ckpt_path={crafted}",
                              f"hydra.run.dir={tmp_path / 'resumed'}"])
    line = _one_error(status, err)
    assert f"SnapshotEnsemble: the checkpoint names '{path}' as the snapshot of cycle" in line
    assert "resume from a checkpoint that SnapshotEnsemble wrote" in line
