"""One run directory, one training: a second training never writes into another one's folder.

The processes of one distributed job must share a run directory (the README gives them the
same ``hydra.run.dir``), but a second training given that folder, at the same time or later,
would replace the first one's ``.hydra/`` record, its ``version_0`` logs and its checkpoints.
:class:`RunDirGuard`, a Hydra callback, claims the folder before Hydra writes anything into it.
The first process writes an owner record to ``<dir>/.job`` (created exclusively, so one of two
racing jobs wins): the job's id, its restart count, and one entry per process of the job. Then:

* a process of the same job with another rank joins (the ranks of one DDP job share the folder);
* a second process with the same job id *and* the same rank is a second training of that job
  (two trainings one after the other in one SLURM job step, or in one torchrun rendezvous) and
  is refused, unless its restart count is higher (a requeued SLURM job, a restarted torchrun
  worker continue in their folder);
* any other job is refused with one line, before any file is written; another step of the
  same SLURM job counts as another job.

A job's id is, in this order: ``slurm:<SLURM_JOB_ID>[_<array task>][.<step>]`` under SLURM;
``torchrun:<rdzv id>`` under torchrun (``torchrun:<MASTER_ADDR>:<MASTER_PORT>:none`` for the
default rdzv id); ``submitit-local:<job>`` for the tasks of a submitit_local job; the id its
parent process exported (the worker processes that Lightning's DDP launcher starts); otherwise
a new random id. Each job of a multirun gets its sweep's id with
``/<job number>`` added, so two jobs whose ``hydra.sweep.subdir`` is the same folder are refused.
A process's rank is :func:`rank_key`.

A run that fails before training starts (a pre-flight check, a bad value, a range test that
cannot start) releases its claim (:func:`release`): the corrected command may reuse the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lightning_clr.cli.config import ConfigError, plain_text

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the exclusive create still picks one owner
    fcntl = None  # type: ignore[assignment]

__all__ = ["JOB_ENV", "OWNER_FILE", "RunDirError", "RunDirGuard", "RunDirInUse", "attempt", "check_ours", "claim",
           "job_id", "rank_key", "release"]

#: the file in a run directory that names the job owning it
OWNER_FILE = ".job"
#: environment variable through which a job's id reaches the processes it starts
JOB_ENV = "LIGHTNING_CLR_JOB_ID"
#: environment variable through which a multirun's id reaches its jobs
SWEEP_ENV = "LIGHTNING_CLR_SWEEP_ID"
_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


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
        step = env.get("SLURM_STEP_ID")
        return (f"slurm:{env.get('SLURM_ARRAY_JOB_ID', env['SLURM_JOB_ID'])}" + (f"_{array}" if array else "")
                + (f".{step}" if step else ""))
    run = env.get("TORCHELASTIC_RUN_ID")
    if run and run != "none":
        return f"torchrun:{run}"
    if run and env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        return f"torchrun:{env['MASTER_ADDR']}:{env['MASTER_PORT']}:{run}"
    if env.get("SUBMITIT_LOCAL_JOB_ID"):  # the tasks of one submitit_local job
        return f"submitit-local:{env['SUBMITIT_LOCAL_JOB_ID']}"
    if env.get(JOB_ENV):
        return env[JOB_ENV]
    return f"local:{uuid.uuid4().hex}"


def rank_key(environ: dict[str, str] | None = None) -> str:
    """This process's place in its job: ``$RANK`` under torchrun, else ``<task or node>.<LOCAL_RANK>``.

    The task is ``$SLURM_PROCID`` (SLURM, also through submitit) or ``$SUBMITIT_LOCAL_GLOBALID``
    (submitit_local), the node ``$NODE_RANK``; ``$LOCAL_RANK`` tells apart the workers that
    Lightning's DDP launcher starts.
    """
    env = os.environ if environ is None else environ
    if env.get("RANK"):
        return env["RANK"]
    task = env.get("SLURM_PROCID") or env.get("SUBMITIT_LOCAL_GLOBALID") or env.get("NODE_RANK") or 0
    return f"{task}.{env.get('LOCAL_RANK') or 0}"


def attempt(environ: dict[str, str] | None = None) -> int:
    """How often the job was restarted: ``$SLURM_RESTART_COUNT`` (requeue) or ``$TORCHELASTIC_RESTART_COUNT``."""
    env = os.environ if environ is None else environ
    count = env.get("SLURM_RESTART_COUNT") or env.get("TORCHELASTIC_RESTART_COUNT") or "0"
    return int(count) if count.isdigit() else 0


def _family(job: str) -> str:
    """The job without its SLURM step: a requeued job may run its training in a step of another number."""
    return job.rsplit(".", 1)[0] if job.startswith("slurm:") else job


def _sweep_of(job: str) -> str | None:
    """The multirun a job id belongs to (``X`` of ``X/3``), else ``None``."""
    head, sep, num = job.rpartition("/")
    return head if sep and num.isdigit() else None


def _process() -> tuple[str, int]:
    """This process: ``(host, pid)``."""
    return socket.gethostname(), os.getpid()


def _me() -> dict[str, Any]:
    host, pid = _process()
    return {"host": host, "pid": pid, "attempt": attempt()}


def _read(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = b""
    while chunk := os.read(fd, 65536):
        text += chunk
    try:
        record = json.loads(text) if text.strip() else None
    except ValueError:  # a creator still writing it
        return None
    return record if isinstance(record, dict) else {"job": "unknown (unreadable .job file)"}


def _write(fd: int, record: dict[str, Any]) -> None:
    data = json.dumps(record).encode()
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, data)
    with contextlib.suppress(OSError):
        os.fsync(fd)


@contextlib.contextmanager
def _locked(path: Path, wait_s: float = 5.0) -> Iterator[tuple[int, dict[str, Any]]]:
    """The owner record of ``path``, read under an exclusive lock (best effort where the file system has none).

    Waits up to ``wait_s`` for a racing creator to finish writing it; a record that stays
    empty or broken reads as an unknown owner.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            with contextlib.suppress(OSError, AttributeError):  # no locks here: the exclusive create still decides
                fcntl.flock(fd, fcntl.LOCK_EX)
            record = _read(fd)
            if record is not None:
                break
            if time.monotonic() > deadline:
                record = {"job": "unknown (unreadable .job file)"}
                break
            with contextlib.suppress(OSError, AttributeError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            time.sleep(0.05)
        yield fd, record
    finally:
        os.close(fd)  # also releases the lock


def _peek(path: Path, wait_s: float = 1.0) -> dict[str, Any]:
    """The owner record of ``path`` without a lock (the folder may be read-only to this user)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return {"job": "unknown (unreadable .job file)"}
        try:
            record = _read(fd)
        finally:
            os.close(fd)
        if record is not None:
            return record
        if time.monotonic() > deadline:
            return {"job": "unknown (unreadable .job file)"}
        time.sleep(0.05)


def _record(me: str, key: str) -> dict[str, Any]:
    mine = _me()
    return {"job": me, **mine, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ranks": {key: mine}}


def _shown(run_dir: str | os.PathLike, folder: Path) -> str:
    """``run_dir`` as given, with the folder it leads to when that differs (a link)."""
    given = Path(os.path.abspath(os.path.expanduser(run_dir)))
    return f"{folder}" if given == folder else f"{run_dir} (a link to {folder})"


def claim(run_dir: str | os.PathLike, key: str = "hydra.run.dir", earlier_runs: bool = True,
          job: str | None = None) -> str:
    """Claim ``run_dir`` for this process of this job, or refuse (see the module docstring).

    Args:
        run_dir: the folder the job will write to.
        key: the config key that chose it, for the message.
        earlier_runs: also refuse a folder holding a run without an owner record (a ``.hydra``
            folder, no ``.job``); off for a multirun's job folder, which Hydra fills before
            its callbacks see it.
        job: this job's id (default :func:`job_id`).

    Returns:
        This job's id, also exported as ``$LIGHTNING_CLR_JOB_ID`` for the processes it starts.

    Raises:
        RunDirError: the folder cannot be created (a name too long, no permission).
        RunDirInUse: another job owns the folder, this job already trained there, or it holds
            an earlier run that predates ownership records (a ``.hydra`` folder without ``.job``).
    """
    me = job or job_id()
    folder = Path(run_dir).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"{key}={str(run_dir)[:60]}...: cannot create the folder ({err.strerror or err}); "
                          f"pick another {key}") from None
    owner_file = folder / OWNER_FILE
    shown = _shown(run_dir, folder)
    fix = f"give this run its own folder (drop {key}=... or pick a new one)"
    resume = f"to continue that run, resume into a new folder with +ckpt_path={folder}/checkpoints/last.ckpt"
    if earlier_runs and (folder / ".hydra").exists() and not owner_file.exists():
        raise RunDirInUse(f"{key}={shown} already holds an earlier run (its .hydra/ record); {fix}; {resume}")
    rank = rank_key()
    try:
        fd = os.open(owner_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with _locked(owner_file) as (fd, owner):
            new = _joined(owner, me, rank)
            if new is None:
                raise RunDirInUse(f"{key}={shown} {_refusal(owner, me, rank, key)}; {fix}; {resume}") from None
            _write(fd, new)
    else:
        with os.fdopen(fd, "w") as f:
            json.dump(_record(me, rank), f)
    os.environ[JOB_ENV] = me
    return me


def _joined(owner: dict[str, Any], me: str, rank: str) -> dict[str, Any] | None:
    """The owner record with this process added, or ``None`` where it may not join."""
    if owner.get("released"):  # the run before failed before training: the folder is free
        return _record(me, rank)
    if owner.get("job") != me:
        restarted = _family(str(owner.get("job"))) == _family(me) and attempt() > int(owner.get("attempt", 0))
        return _record(me, rank) if restarted else None
    ranks = dict(owner.get("ranks") or {})
    seen = ranks.get(rank)
    same_process = seen is not None and (seen.get("host"), seen.get("pid")) == _process()
    if seen is not None and not same_process and attempt() <= int(seen.get("attempt", 0)):
        return None
    ranks[rank] = _me()
    return {**owner, "ranks": ranks}


def _refusal(owner: dict[str, Any], me: str, rank: str, key: str) -> str:
    """Why ``owner``'s folder is not this process's, as the middle of a one-line message."""
    job = owner.get("job")
    started = f", started {owner['started']} on {owner.get('host')}" if "started" in owner else ""
    if job == me:
        return (f"already holds a training of this job ({me}, process {rank}{started}); a second training in one "
                "job needs a folder of its own")
    sweep = _sweep_of(str(job))
    if sweep is not None and sweep == _sweep_of(me):
        return (f"is the folder of job {str(job).rpartition('/')[2]} of this multirun; job {me.rpartition('/')[2]} "
                f"lands there too: make {key} differ per job, e.g. {key}=${{hydra.job.num}}")
    return f"belongs to another job ({job}{started})"


def release(run_dir: str | os.PathLike | None, reason: str = "failed before training") -> bool:
    """Give up this process's claim on ``run_dir`` after a failure before training, so the folder may be reused.

    Nothing happens unless this job owns the folder. The folder is free once every process of
    the job that joined it has released it.

    Returns:
        Whether the folder is now free.
    """
    if run_dir is None:
        return False
    owner_file = Path(run_dir).expanduser().resolve() / OWNER_FILE
    me = os.environ.get(JOB_ENV)
    if not me or not owner_file.is_file():
        return False
    with _locked(owner_file, wait_s=1.0) as (fd, owner):
        if owner.get("job") != me or owner.get("released"):
            return bool(owner.get("released"))
        ranks = dict(owner.get("ranks") or {})
        seen = ranks.get(rank_key())
        if seen is not None and (seen.get("host"), seen.get("pid")) == _process():
            del ranks[rank_key()]
        _write(fd, {**owner, "ranks": ranks, **({} if ranks else {"released": reason})})
    return not ranks


def check_ours(path: str | os.PathLike, key: str) -> None:
    """Refuse a folder the run would write to that lies, directly or through a link, in another job's run folder.

    The nearest folder above ``path`` (after following links) with an owner record must belong
    to this job (``$LIGHTNING_CLR_JOB_ID``) or be released.

    Raises:
        RunDirInUse: one line naming ``key``, where it leads and whose folder that is.
    """
    resolved = Path(path).expanduser().resolve()
    me = os.environ.get(JOB_ENV)
    for folder in (resolved, *resolved.parents):
        owner_file = folder / OWNER_FILE
        if not owner_file.is_file():
            continue
        owner = _peek(owner_file)
        if owner.get("released") or (me is not None and owner.get("job") == me):
            return
        raise RunDirInUse(
            f"{key}={_shown(path, resolved)} lies in {folder}, the run folder of another job ({owner.get('job')}); "
            f"its files would mix with that run's: remove the link, or point {key} at a folder of this run"
        )


class RunDirGuard(Callback):
    """Hydra callback: claim ``hydra.run.dir`` (or the multirun's ``hydra.sweep.dir``) before Hydra writes to it.

    A folder of another job ends the process with ``error: ...`` on one line and exit status 2.
    A multirun whose ``hydra.sweep.subdir`` is the same for every job is refused before its first job.

    Enabled in ``python -m lightning_clr.run``; for an app of your own, add it to the primary config::

        hydra:
          callbacks:
            run_dir_guard:
              _target_: lightning_clr.cli.rundir.RunDirGuard
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _or_exit(lambda: claim(config.hydra.run.dir, "hydra.run.dir"))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(JOB_ENV, None)  # a later run in this process (a test, a notebook) is another job

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _or_exit(lambda: _refuse_one_subdir(config))
        os.environ[SWEEP_ENV] = _or_exit(lambda: claim(config.hydra.sweep.dir, "hydra.sweep.dir"))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(SWEEP_ENV, None)
        os.environ.pop(JOB_ENV, None)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.hydra.mode) == "RunMode.MULTIRUN":  # the sweep folder is ours; mark the job's own folder
            job = f"{os.environ.get(SWEEP_ENV) or job_id()}/{config.hydra.job.num}"
            _or_exit(lambda: claim(config.hydra.runtime.output_dir, "hydra.sweep.subdir", earlier_runs=False,
                                   job=job))


def _several_jobs(config: DictConfig) -> bool:
    """Whether the multirun will run more than one job (a sweep override, sweeper params, another sweeper)."""
    sweeper = config.hydra.get("sweeper") or {}
    if sweeper.get("_target_", _BASIC_SWEEPER) != _BASIC_SWEEPER or sweeper.get("params"):
        return True
    overrides = list(config.hydra.overrides.get("task") or [])
    try:
        return any(o.is_sweep_override() for o in OverridesParser.create().parse_overrides(overrides))
    except HydraException:  # Hydra parsed them already; anything odd here: assume a sweep
        return True


def _refuse_one_subdir(config: DictConfig) -> None:
    """Refuse a multirun whose ``hydra.sweep.subdir`` names one folder for two of its jobs, before any job runs.

    A subdir without interpolations is one folder for all jobs. One with interpolations is resolved
    for each job of the basic sweeper (its first ``_SUBDIR_CHECKS``), composed as its launcher
    composes them; other sweepers choose their jobs as they go, and each job's own claim refuses a
    folder taken.
    """
    raw = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if raw is None or not _several_jobs(config):
        return
    fix = "make it differ per job, e.g. hydra.sweep.subdir=${hydra.job.num} (the default)"
    if "${" not in str(raw):
        folder = Path(str(config.hydra.sweep.dir), str(raw))
        raise RunDirInUse(f"hydra.sweep.subdir={raw}: every job of this multirun would write into {folder}; {fix}")
    seen: dict[Path, int] = {}
    for num, folder in enumerate(_job_folders(config)):
        if folder in seen:
            raise RunDirInUse(f"hydra.sweep.subdir={raw}: jobs {seen[folder]} and {num} of this multirun would both "
                              f"write into {folder}; {fix}")
        seen[folder] = num


#: the most jobs of a multirun whose interpolated subdir is resolved before they run (each one is composed)
_SUBDIR_CHECKS = 200


def _job_folders(config: DictConfig) -> Iterator[Path]:
    """Each job's ``hydra.sweep.dir / hydra.sweep.subdir`` under the basic sweeper; nothing for another sweeper,
    or where Hydra cannot compose or resolve a job here (its launcher will say why)."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    sweeper = config.hydra.get("sweeper") or {}
    if sweeper.get("_target_", _BASIC_SWEEPER) != _BASIC_SWEEPER or not GlobalHydra.instance().is_initialized():
        return
    try:  # Hydra keeps its basic sweeper private (1.3): if it moves, each job's own claim is the check
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    except ImportError:
        return
    try:
        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.get("task") or []))
        jobs = BasicSweeper.split_arguments(overrides, None)[0][:_SUBDIR_CHECKS]
        loader = GlobalHydra.instance().config_loader()
        for num, job in enumerate(jobs):
            job_config = loader.load_sweep_config(config, list(job))
            with open_dict(job_config):
                job_config.hydra.job.id = job_config.hydra.job.num = num
            yield Path(str(job_config.hydra.sweep.dir), str(job_config.hydra.sweep.subdir))
    except (HydraException, OmegaConfBaseException):
        return


def _or_exit(step: Callable[[], Any]) -> Any:
    """``step()``, or ``error: ...`` on one line and exit status 2 where it refuses the folder.

    Hydra turns an exception raised in a callback into a warning and goes on, so a refusal
    must end the process itself, before Hydra writes ``.hydra/`` into the folder.
    """
    try:
        return step()
    except RunDirError as err:
        print(f"error: {plain_text(str(err))}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
