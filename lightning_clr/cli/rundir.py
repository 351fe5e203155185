"""One run directory, one job: a second job never writes into another job's folder.

The processes of one distributed job must share a run directory (the README gives them the
same ``hydra.run.dir``), but a second job given that folder, at the same time or later,
would replace the first job's ``.hydra/`` record, its ``version_0`` logs and its
checkpoints. :class:`RunDirGuard`, a Hydra callback, claims the folder before Hydra writes
anything into it: the first process writes the job's id to ``<dir>/.job`` (created
exclusively, so one of two racing jobs wins); a process of the same job finds its own id
there and shares the folder; any other job is refused with one line, before any file is
written.

A job's id is, in this order: ``slurm:<SLURM_JOB_ID>[_<array task>]`` under SLURM (a
requeued job keeps its id and its folder); ``torchrun:<MASTER_ADDR>:<MASTER_PORT>:<rdzv
id>`` under torchrun; the id its parent process exported (the worker processes that
Lightning's DDP launcher starts); otherwise a new random id. Not detected: two torchrun
jobs one after the other with the same master address, port and ``--rdzv-id`` (the default
id is ``none``), which look like one job; give each its own ``hydra.run.dir``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lightning_clr.cli.config import ConfigError

__all__ = ["JOB_ENV", "OWNER_FILE", "RunDirError", "RunDirGuard", "RunDirInUse", "claim", "job_id"]

#: the file in a run directory that names the job owning it
OWNER_FILE = ".job"
#: environment variable through which a job's id reaches the processes it starts
JOB_ENV = "LIGHTNING_CLR_JOB_ID"


class RunDirError(ConfigError):
    """The run directory cannot be used; ``str()`` names the folder and the fix."""


class RunDirInUse(RunDirError):
    """The run directory belongs to another job; ``str()`` names the folder, its owner and the fix."""


def job_id(environ: dict[str, str] | None = None) -> str:
    """The id shared by every process of this job (see the module docstring).

    Args:
        environ: the environment to read (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    if env.get("SLURM_JOB_ID"):
        array = env.get("SLURM_ARRAY_TASK_ID")
        return f"slurm:{env.get('SLURM_ARRAY_JOB_ID', env['SLURM_JOB_ID'])}" + (f"_{array}" if array else "")
    if env.get("TORCHELASTIC_RUN_ID") and env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        return f"torchrun:{env['MASTER_ADDR']}:{env['MASTER_PORT']}:{env['TORCHELASTIC_RUN_ID']}"
    if env.get(JOB_ENV):
        return env[JOB_ENV]
    return f"local:{uuid.uuid4().hex}"


def _read_owner(path: Path, wait_s: float = 5.0) -> dict[str, Any]:
    """The owner record, waiting for a racing creator to finish writing it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            text = path.read_text()
            if text.strip():
                return json.loads(text)
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return {"job": "unknown (unreadable .job file)"}
        time.sleep(0.05)


def claim(run_dir: str | os.PathLike, key: str = "hydra.run.dir", earlier_runs: bool = True) -> str:
    """Claim ``run_dir`` for this job, or refuse if another job owns it.

    Args:
        run_dir: the folder the job will write to.
        key: the config key that chose it, for the message.
        earlier_runs: also refuse a folder holding a run without an owner record (a ``.hydra``
            folder, no ``.job``); off for a multirun's job folder, which Hydra fills before
            its callbacks see it.

    Returns:
        This job's id, also exported as ``$LIGHTNING_CLR_JOB_ID`` for the processes it starts.

    Raises:
        RunDirError: the folder cannot be created (a name too long, no permission).
        RunDirInUse: another job owns the folder, or it holds an earlier run that predates
            ownership records (a ``.hydra`` folder without ``.job``).
    """
    me = job_id()
    folder = Path(run_dir).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"{key}={str(run_dir)[:60]}...: cannot create the folder ({err.strerror or err}); "
                          f"pick another {key}") from None
    owner_file = folder / OWNER_FILE
    legacy = earlier_runs and (folder / ".hydra").exists() and not owner_file.exists()
    fix = f"give this run its own folder (drop {key}=... or pick a new one)"
    if legacy:
        raise RunDirInUse(f"{key}={folder} already holds an earlier run (its .hydra/ record); {fix}; "
                          f"to continue that run, resume into a new folder with +ckpt_path={folder}/checkpoints/last.ckpt")
    record = {"job": me, "host": socket.gethostname(), "pid": os.getpid(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        fd = os.open(owner_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        owner = _read_owner(owner_file)
        if owner.get("job") != me:
            started = f", started {owner['started']} on {owner.get('host')}" if "started" in owner else ""
            raise RunDirInUse(
                f"{key}={folder} belongs to another job ({owner.get('job')}{started}); {fix}; to continue that run, "
                f"resume into a new folder with +ckpt_path={folder}/checkpoints/last.ckpt"
            ) from None
    else:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
    os.environ[JOB_ENV] = me
    return me


class RunDirGuard(Callback):
    """Hydra callback: claim ``hydra.run.dir`` (or the multirun's ``hydra.sweep.dir``) before Hydra writes to it.

    A folder of another job ends the process with ``error: ...`` on one line and exit status 2.

    Enabled in ``python -m lightning_clr.run``; for an app of your own, add it to the primary config::

        hydra:
          callbacks:
            run_dir_guard:
              _target_: lightning_clr.cli.rundir.RunDirGuard
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _claim_or_exit(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _claim_or_exit(config.hydra.sweep.dir, "hydra.sweep.dir")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.hydra.mode) == "RunMode.MULTIRUN":  # the sweep folder is ours; mark the job's own folder
            _claim_or_exit(config.hydra.runtime.output_dir, "hydra.sweep.subdir", earlier_runs=False)


def _claim_or_exit(run_dir: str, key: str, earlier_runs: bool = True) -> None:
    """:func:`claim`, or ``error: ...`` on one line and exit status 2.

    Hydra turns an exception raised in a callback into a warning and goes on, so a refusal
    must end the process itself, before Hydra writes ``.hydra/`` into the folder.
    """
    try:
        claim(run_dir, key, earlier_runs=earlier_runs)
    except RunDirError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
