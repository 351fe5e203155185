"""Nothing lost, nothing silent: NaN losses, last.ckpt, kills during a write, run-directory reuse,
unsafe files and folders that cannot be written, through the real command line where a user meets them."""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_clr import LRRangeTest
from lightning_clr.cli.checkpointing import AtomicCheckpointIO, SafeCheckpoint, remove_stale_temp_files
from lightning_clr.cli.faults import NonFiniteLossError, StopOnNonFiniteLoss
from lightning_clr.cli.rundir import OWNER_FILE, RunDirInUse, claim, job_id
from lightning_clr.data import CIFAR10DataModule
from tests.faulty_models import NaNFromStep
from tests.helpers import run_cli, tiny_data, tiny_model, tiny_trainer

pytestmark = pytest.mark.slow  # the CLI in subprocesses: kills, signals, full disks, two jobs in one folder

ROOT = Path(__file__).resolve().parents[1]
BASE = ["data=synthetic", "model=mlp", "finder.num_steps=20", "finder.start_lr=1e-4", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false", "logger=csv"]
STEPS_PER_EPOCH = 16  # data=synthetic: 512 samples, batch 32


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return env


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, **{"PYTHONPATH": str(ROOT), **env})


def _start(args: list[str], cwd: Path, log: Path, **env: str) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "lightning_clr.run", *args], cwd=cwd, env=_env(**env),
                                stdout=out, stderr=subprocess.STDOUT, text=True)


def _one_error(proc: subprocess.CompletedProcess | str) -> str:
    """The single ``error: ...`` line of a run, checking that no traceback was printed."""
    text = proc if isinstance(proc, str) else proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, text[-3000:]
    return errors[0]


def _step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def _finite(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


@contextlib.contextmanager
def _mount_tmpfs(where: Path, options: str):
    """A tmpfs at ``where`` (root only); skips the test where the machine cannot mount one."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; this machine runs the tests as a user")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


# ---------------------------------------------------------------------------- 1. NaN loss mid-training


def test_nan_loss_mid_training_stops_on_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = _cli([*BASE, f"hydra.run.dir={run}", "model._target_=tests.faulty_models.NaNFromStep",
                 "+model.nan_from_step=25", "+callbacks=checkpoint", "callbacks.checkpoint.every_n_train_steps=10"],
                tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = _one_error(proc)
    last = run / "checkpoints" / "last.ckpt"
    for words in ("training loss is nan at optimizer step 25", "lr=", f"{last.resolve()} (optimizer step 20)",
                  f"+ckpt_path={last}", "lower the learning rate"):
        assert words in line, line
    assert _step(last) == 20 and _finite(last)  # the good step-20 state, not overwritten by steps 25..32
    assert "final:" not in proc.stdout  # no summary of a broken run


def test_without_the_guards_lightning_overwrites_the_good_checkpoint_with_nan(tmp_path):
    """The baseline the guards fix, measured in the same test run: plain ModelCheckpoint, no loss check."""
    def fit(callbacks):
        trainer = tiny_trainer(tmp_path, max_epochs=2, limit_val_batches=1, enable_checkpointing=True,
                               callbacks=[LRRangeTest(bounds=(0.01, 0.1)), *callbacks])
        model = NaNFromStep(nan_from_step=25, net=tiny_model().net, num_classes=4)
        trainer.fit(model, datamodule=tiny_data())
        return trainer

    plain = ModelCheckpoint(dirpath=tmp_path / "plain", every_n_train_steps=10, save_last=True, save_top_k=0)
    trainer = fit([plain])
    assert math.isnan(float(trainer.callback_metrics["train/loss_epoch"]))  # fit returned normally
    # step 30 on Lightning 2.6, 32 on 2.5 (which also saves at the end of the run): a NaN state past the good one
    assert _step(tmp_path / "plain" / "last.ckpt") > 25 and not _finite(tmp_path / "plain" / "last.ckpt")

    safe = SafeCheckpoint(dirpath=tmp_path / "safe", every_n_train_steps=10, save_last=True, save_top_k=0)
    with pytest.raises(NonFiniteLossError, match="optimizer step 25"):
        fit([StopOnNonFiniteLoss(), safe])
    assert _step(tmp_path / "safe" / "last.ckpt") == 20 and _finite(tmp_path / "safe" / "last.ckpt")


def test_a_non_finite_state_never_replaces_a_finite_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 20, "state_dict": {"w": torch.ones(3)}}, target)
    with pytest.warns(UserWarning, match=r"state_dict.w is not finite at optimizer step 40; it keeps optimizer step 20"):
        io.save_checkpoint({"global_step": 40, "state_dict": {"w": torch.tensor([1.0, math.nan, 2.0])}}, target)
    with pytest.warns(UserWarning, match=r"optimizer_states.0.state.0.exp_avg is not finite"):
        io.save_checkpoint({"global_step": 41, "state_dict": {"w": torch.ones(3)},
                            "optimizer_states": [{"state": {0: {"exp_avg": torch.tensor([math.inf])}}}]}, target)
    assert _step(target) == 20 and io.refused == [(str(target), "state_dict.w", 40),
                                                  (str(target), "optimizer_states.0.state.0.exp_avg", 41)]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_check_every_n_steps_still_names_the_first_bad_step(tmp_path):
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_val_batches=0,
                           callbacks=[LRRangeTest(bounds=(0.01, 0.1)), StopOnNonFiniteLoss(check_every_n_steps=8)])
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at optimizer step 5 \(lr=0.\d+, epoch 0\); "
                                                 r"training stopped, no checkpoint was written"):
        trainer.fit(NaNFromStep(nan_from_step=5, net=tiny_model().net, num_classes=4), datamodule=tiny_data())
    assert trainer.global_step == 8  # detected at the check after step 8
    with pytest.raises(ValueError, match="check_every_n_steps must be an integer >= 1, got 0"):
        StopOnNonFiniteLoss(check_every_n_steps=0)


# ---------------------------------------------------------------------------- 2. last.ckpt is the last state


def test_last_ckpt_holds_the_final_step_and_resumes_from_there(tmp_path):
    run = tmp_path / "run"
    # a constant LR: the resume trains one epoch longer, which a schedule fitted to the run refuses
    proc = _cli([*BASE, "+schedule=constant", f"hydra.run.dir={run}", "+callbacks=checkpoint",
                 "callbacks.checkpoint.every_n_train_steps=5"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 2 * STEPS_PER_EPOCH  # 32, not 30 (the last multiple of 5)
    assert state["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 2  # after the final validation
    resumed = tmp_path / "resumed"
    proc = _cli([*BASE, "+schedule=constant", "trainer.max_epochs=3", f"hydra.run.dir={resumed}",
                 "+callbacks=checkpoint", f"+ckpt_path={last}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restored from the checkpoint" in proc.stdout
    assert _step(resumed / "checkpoints" / "last.ckpt") == 3 * STEPS_PER_EPOCH


def _wait_for(path: Path, proc: subprocess.Popen, log: Path) -> None:
    while not path.exists():
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.02)


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl+C"])
def test_a_signal_saves_last_ckpt_at_the_step_it_stopped(sig, status, tmp_path):
    run, log = tmp_path / "run", tmp_path / "run.log"
    proc = _start([*BASE, "trainer.max_epochs=200", f"hydra.run.dir={run}", "+callbacks=checkpoint",
                   "callbacks.checkpoint.every_n_train_steps=7"], tmp_path, log)
    try:
        last = run / "checkpoints" / "last.ckpt"
        _wait_for(last, proc, log)
        proc.send_signal(sig)
        assert proc.wait(timeout=300) == status, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    (line,) = [s for s in text.splitlines() if s.startswith(f"{sig.name}: stopped at optimizer step")]
    step = int(line.split("optimizer step ")[1].split(";")[0])
    assert _step(last) == step  # the step it stopped at, not the last multiple of 7
    assert f"saved {last.resolve()}; resume with +ckpt_path={last.resolve()}" in line
    assert 7 <= step < 200 * STEPS_PER_EPOCH and _finite(last)


# ---------------------------------------------------------------------------- 3. SIGKILL during a write


def test_sigkill_during_a_checkpoint_write_with_tmpdir_on_tmpfs_keeps_last_ckpt(tmp_path):
    with _mount_tmpfs(tmp_path / "tmpfs", "size=256m") as tmpfs:
        run, log = tmp_path / "run", tmp_path / "run.log"
        assert os.stat(tmpfs).st_dev != os.stat(tmp_path).st_dev  # $TMPDIR on another file system
        args = [*BASE, "trainer.max_epochs=1", "model._target_=tests.faulty_models.Ballast", "+model.ballast_mib=16",
                "+callbacks=checkpoint", "callbacks.checkpoint.every_n_train_steps=1"]
        proc = _start([*args, f"hydra.run.dir={run}"], tmp_path, log, TMPDIR=str(tmpfs))
        folder = run / "checkpoints"
        try:
            _wait_for(folder / "last.ckpt", proc, log)
            while not list(folder.glob(".last.ckpt.*.tmp")):  # the next write is under way
                assert proc.poll() is None, log.read_text()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
        (temp,) = folder.glob(".last.ckpt.*.tmp")  # killed in the middle of writing the temporary file
        assert not [p for p in tmpfs.rglob("*") if p.is_file()]  # nothing left in $TMPDIR
        step = _step(folder / "last.ckpt")  # the previous last.ckpt, whole
        assert 1 <= step < STEPS_PER_EPOCH and _finite(folder / "last.ckpt")
        assert remove_stale_temp_files(folder) == [temp] and not temp.exists()  # its writer is gone
        resumed = tmp_path / "resumed"
        done = _cli([*args, f"hydra.run.dir={resumed}", f"+ckpt_path={folder / 'last.ckpt'}"], tmp_path,
                    TMPDIR=str(tmpfs))
        assert done.returncode == 0, done.stderr[-3000:]
        assert _step(resumed / "checkpoints" / "last.ckpt") == STEPS_PER_EPOCH


# ---------------------------------------------------------------------------- 4. run-directory reuse


def test_a_second_job_in_the_same_run_dir_is_refused_and_overwrites_nothing(tmp_path):
    run = tmp_path / "shared"
    first = _cli([*BASE, "trainer.max_epochs=1", f"hydra.run.dir={run}", "+schedule=sgdr", "+callbacks=checkpoint"],
                 tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert run / ".hydra" / "config.yaml" in before and run / "checkpoints" / "last.ckpt" in before
    second = _cli([*BASE, "trainer.max_epochs=1", f"hydra.run.dir={run}", "+schedule=one_cycle"], tmp_path)
    assert second.returncode == 2
    line = _one_error(second)
    assert f"hydra.run.dir={run} belongs to another job" in line and "give this run its own folder" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing replaced, nothing added
    assert "SGDR" in (run / ".hydra" / "config.yaml").read_text()


def test_two_jobs_started_at_once_in_one_run_dir_one_is_refused(tmp_path):
    run = tmp_path / "shared"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_start([*BASE, "trainer.max_epochs=1", f"hydra.run.dir={run}", f"seed={i}"], tmp_path, log)
             for i, log in enumerate(logs)]
    codes = sorted(p.wait(timeout=600) for p in procs)
    assert codes == [0, 2], [log.read_text()[-2000:] for log in logs]
    refused = next(log.read_text() for p, log in zip(procs, logs) if p.returncode == 2)
    assert "belongs to another job" in _one_error(refused)
    assert [p.name for p in run.glob("csv/version_*")] == ["version_0"]
    winner = next(i for i, p in enumerate(procs) if p.returncode == 0)
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["seed"] == winner


def test_processes_of_one_job_share_the_run_dir(tmp_path, monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_STEP_ID", "SLURM_PROCID",
                 "SLURM_RESTART_COUNT", "TORCHELASTIC_RUN_ID", "RANK", "LOCAL_RANK", "NODE_RANK",
                 "LIGHTNING_CLR_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert claim(tmp_path / "slurm") == "slurm:4242" == claim(tmp_path / "slurm")  # every task of the job
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    with pytest.raises(RunDirInUse, match=r"belongs to another job \(slurm:4242, started"):
        claim(tmp_path / "slurm")
    monkeypatch.delenv("SLURM_JOB_ID")
    torchrun = {"TORCHELASTIC_RUN_ID": "none", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    assert job_id(torchrun) == "torchrun:node0:29500:none" == job_id({**torchrun, "LOCAL_RANK": "3"})
    monkeypatch.delenv("LIGHTNING_CLR_JOB_ID", raising=False)
    me = claim(tmp_path / "local")
    assert me.startswith("local:") and os.environ["LIGHTNING_CLR_JOB_ID"] == me  # what DDP workers inherit
    assert claim(tmp_path / "local") == me and job_id({"LIGHTNING_CLR_JOB_ID": me}) == me
    assert yaml.safe_load((tmp_path / "local" / OWNER_FILE).read_text())["pid"] == os.getpid()
    (tmp_path / "old" / ".hydra").mkdir(parents=True)  # a run from before ownership records
    with pytest.raises(RunDirInUse, match=r"already holds an earlier run"):
        claim(tmp_path / "old")


# ---------------------------------------------------------------------------- 5. unsafe files


class _Payload:
    """Pickles to a call of ``exec`` that writes a marker file: what a crafted data file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _cifar_folder(folder: Path, n: int = 20) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    return folder


def test_cifar_batches_load_with_the_restricted_unpickler(tmp_path):
    folder = _cifar_folder(tmp_path / "cifar-10-batches-py")
    dm = CIFAR10DataModule(data_dir=str(tmp_path))
    x, y, x_val, _ = dm._load()
    entry = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")
    assert x.shape == (100, 3, 32, 32) and x_val.shape == (20, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x[:20].reshape(20, -1), entry[b"data"]) and y[:20].tolist() == entry[b"labels"]


def test_a_malicious_cifar_batch_is_refused_without_running_it(tmp_path):
    folder = _cifar_folder(tmp_path / "data" / "cifar-10-batches-py")
    marker = tmp_path / "marker"
    crafted = pickle.dumps({b"data": _Payload(marker), b"labels": [0]}, protocol=2)
    pickle.loads(crafted)  # plain pickle runs the payload: the file is a real attack
    assert marker.read_text() == "pwned"
    marker.unlink()
    (folder / "data_batch_1").write_bytes(crafted)
    proc = _cli(["data=cifar10", f"data.data_dir={folder}", "model=mlp", "finder.num_steps=20",
                 "trainer.max_epochs=1", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_error(proc)
    assert f"data.data_dir: {folder / 'data_batch_1'} is not a CIFAR-10 python batch" in line
    assert "refused global" in line and ".exec" in line and "cifar-10-python.tar.gz" in line
    assert not marker.exists()


def test_a_malicious_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    crafted = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "extra": _Payload(marker)}, crafted)
    assert not marker.exists()
    proc = _cli([*BASE, f"+ckpt_path={crafted}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_error(proc)
    assert line.startswith(f"error: ckpt_path={crafted}: refused, it pickles builtins.exec, which neither torch nor "
                           "this run's config names")
    assert "trust_checkpoint=true" in line and "\x1b" not in line
    assert not marker.exists()


def test_a_malicious_snapshot_file_is_refused_by_load_ensemble(tmp_path):
    from lightning_clr import SnapshotFileError, load_ensemble

    marker = tmp_path / "marker"
    torch.save({"state_dict": {}, "extra": _Payload(marker)}, tmp_path / "cycle_1.pt")
    with pytest.raises(SnapshotFileError, match=r"cycle_1.pt' is not a snapshot file SnapshotEnsemble wrote .*"
                                                r"nothing from it was loaded or run"):
        load_ensemble(tiny_model(), tmp_path)
    assert not marker.exists()


# ---------------------------------------------------------------------------- 6. preflight


def test_read_only_checkpoint_folder_fails_before_the_range_test(tmp_path):
    run = tmp_path / "run"
    with _mount_tmpfs(run / "checkpoints", "ro,size=1m") as folder:
        proc = _cli([*BASE, f"hydra.run.dir={run}", "+callbacks=checkpoint"], tmp_path)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = _one_error(proc)
        assert f"callbacks.checkpoint.dirpath={folder}: cannot write there (Read-only file system)" in line
        assert "point callbacks.checkpoint.dirpath at another folder" in line
    assert "bounds:" not in proc.stdout and not list(run.rglob("metrics.csv"))  # no sweep, no training


@pytest.mark.parametrize("where", ["TMPDIR", "checkpoints"])
def test_a_full_disk_fails_before_the_range_test(where, tmp_path):
    run = tmp_path / "run"
    mount = tmp_path / "tmpfs" if where == "TMPDIR" else run / "checkpoints"
    with _mount_tmpfs(mount, "size=64k") as full:
        with contextlib.suppress(OSError), open(full / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        env = {"TMPDIR": str(full)} if where == "TMPDIR" else {}
        proc = _cli([*BASE, f"hydra.run.dir={run}", "+callbacks=checkpoint"], tmp_path, **env)
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = _one_error(proc)
        key = "TMPDIR" if where == "TMPDIR" else "callbacks.checkpoint.dirpath"
        assert line.startswith(f"error: {key}={full}: ") and ("No space left" in line or "MiB free" in line)
    assert "bounds:" not in proc.stdout
