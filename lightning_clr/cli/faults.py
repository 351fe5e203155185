"""Faults that must stop a run at once, on one line, without losing what was saved.

* :class:`StopOnNonFiniteLoss` stops training at the first non-finite training loss, or a
  non-finite validation loss, and names the metric, the optimizer step or epoch, the LR and the
  last checkpoint that is still finite.
* :func:`keep_going_on_write_errors` makes a logger's file writes (``hparams.yaml``,
  ``metrics.csv``) warn instead of ending the run: diagnostics never stop training.
* :func:`check_writable` is the preflight write check the entry point runs for its output
  folder and ``$TMPDIR`` (and :class:`~lightning_clr.cli.checkpointing.SafeCheckpoint` for its
  ``dirpath``) before the range test, so a read-only or full disk fails before any training.

Every error here has a one-line ``str()`` that names the path or the value and the fix;
``python -m lightning_clr.run`` prints it as ``error: ...``. :class:`RunFault` (the run
started but could not go on) exits with status 1, :class:`NotWritableError` (fix the
setup, then run again) with status 2, like every config error.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightning_clr.cli.config import ConfigError

__all__ = [
    "CheckpointWriteError",
    "NonFiniteLossError",
    "NotWritableError",
    "RunFault",
    "StopOnNonFiniteLoss",
    "check_writable",
    "first_non_finite",
    "is_validation_loss",
    "keep_going_on_write_errors",
]


class RunFault(RuntimeError):
    """A run that started but cannot go on; ``str()`` is one line naming what was kept and the fix."""


class NonFiniteLossError(RunFault):
    """The training loss turned NaN or infinite; training stopped before another checkpoint was written."""


class CheckpointWriteError(RunFault):
    """A checkpoint could not be written; the file it would have replaced is unchanged."""


class NotWritableError(ConfigError):
    """A folder the run must write to cannot be written (read-only, missing permission, full)."""


def check_writable(path: str | os.PathLike, key: str, need_bytes: int = 1) -> Path:
    """Create ``path`` if needed and write, sync and delete a small probe file in it.

    Args:
        path: the folder the run will write to.
        key: the config key or variable that chose it, for the message (``output_dir``, ``TMPDIR``).
        need_bytes: free space the run needs there at least (e.g. one checkpoint's size).

    Returns:
        The folder, resolved.

    Raises:
        NotWritableError: the folder cannot be created or written, or has less than
            ``need_bytes`` free; one line naming ``key``, the path and the fix.
    """
    folder = Path(path).expanduser().resolve()
    fix = f"make it writable, free space there, or point {key} at another folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-", suffix=".tmp") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise NotWritableError(f"{key}={folder}: cannot write there ({err.strerror or err}); {fix}") from err
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise NotWritableError(
            f"{key}={folder}: {free / 2**20:.1f} MiB free, a checkpoint needs at least {need_bytes / 2**20:.1f} MiB; {fix}"
        )
    return folder


def temp_dir() -> tuple[str, str]:
    """``(key, folder)`` of the temporary folder other tools write to: ``$TMPDIR`` if set, else Python's choice."""
    given = os.environ.get("TMPDIR")
    return ("TMPDIR", given) if given else ("tempfile.gettempdir()", tempfile.gettempdir())


def first_non_finite(tensors: Any, prefix: str = "") -> str | None:
    """The key path of the first floating-point tensor in ``tensors`` with a NaN or inf, else ``None``.

    Args:
        tensors: a tensor or nested dicts, lists and tuples of them (a ``state_dict``, an
            optimizer's state); anything else is skipped.
        prefix: prepended to the key path.
    """
    if isinstance(tensors, torch.Tensor):
        if (tensors.is_floating_point() or tensors.is_complex()) and not bool(torch.isfinite(tensors).all()):
            return prefix or "tensor"
        return None
    items = tensors.items() if isinstance(tensors, dict) else enumerate(tensors) if isinstance(
        tensors, (list, tuple)) else ()
    for key, value in items:
        found = first_non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def _loss_of(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"]
    return None


_VALIDATION_WORDS = frozenset({"val", "valid", "validation"})


def is_validation_loss(name: str) -> bool:
    """Whether a logged metric's name reads as a validation loss: ``val/loss``, ``val_loss``, ``valid_loss_epoch``.

    Example::

        >>> [is_validation_loss(n) for n in ("val/loss", "val_loss", "train/loss", "interval_loss", "val/acc")]
        [True, True, False, False, False]
    """
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    return any(w in _VALIDATION_WORDS for w in words) and "loss" in words


class StopOnNonFiniteLoss(L.Callback):
    """Stop training at the first training step whose loss is NaN or infinite, or a non-finite validation loss.

    Lightning trains on after a NaN loss, and every later checkpoint holds NaN weights.
    This callback raises :class:`NonFiniteLossError` at the end of that step instead, with
    one line naming the optimizer step, the LR it ran at, and the newest checkpoint that
    is still finite (:class:`~lightning_clr.cli.checkpointing.SafeCheckpoint` never replaces a
    finite checkpoint with a non-finite one). It runs before the checkpoint callbacks
    (Lightning calls those last), so the bad step is never saved. The range test is not
    affected: it handles its own non-finite losses. Under DDP the ranks decide together.

    After each validation (not the sanity check) it does the same for the validation losses:
    every logged metric that :func:`is_validation_loss` recognises (``val/loss``, ``val_loss``),
    or the names given in ``val_metrics``; the error names the metric and the epoch.

    Args:
        check_every_n_steps: check the recorded losses every this many training batches.
            Each check reads a tensor back from the device (a synchronization on a GPU); with
            a larger value the error still names the first bad step, but training runs up to
            ``check_every_n_steps - 1`` batches past it (a checkpoint saved meanwhile is still
            refused if its weights are not finite).
        val_metrics: names of the validation metrics to check; ``None``: every validation loss
            by name; ``[]``: none.

    Raises:
        ValueError: ``check_every_n_steps < 1``.

    Example::

        trainer = L.Trainer(callbacks=[LRRangeTest(), StopOnNonFiniteLoss(), SafeCheckpoint(save_last=True)])
    """

    def __init__(self, check_every_n_steps: int = 1, val_metrics: list[str] | None = None) -> None:
        if int(check_every_n_steps) != check_every_n_steps or check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be an integer >= 1, got {check_every_n_steps!r}")
        self.check_every_n_steps = int(check_every_n_steps)
        self.val_metrics = None if val_metrics is None else [str(m) for m in val_metrics]
        self._pending: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []
        self._lr = math.nan

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        optimizers = trainer.optimizers
        self._lr = float(optimizers[0].param_groups[0]["lr"]) if optimizers else math.nan

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = _loss_of(outputs)
        if loss is not None:
            loss = loss.detach()
            finite = torch.isfinite(loss).all()
            if self.check_every_n_steps == 1 and trainer.world_size == 1 and bool(finite):
                return  # the common case, without the bookkeeping
            self._pending.append((trainer.global_step, self._lr, finite, loss.reshape(-1)[:1]))
        if len(self._pending) >= self.check_every_n_steps:
            self._check(trainer)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending:
            self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        pending, self._pending = self._pending, []
        bad = (~torch.stack([finite for _, _, finite, _ in pending])).float()
        bad = trainer.strategy.reduce(bad, reduce_op="sum")  # non-zero where any rank saw a non-finite loss
        hits = [i for i, flag in enumerate(bad.tolist()) if flag > 0]
        if not hits:
            return
        step, lr, _, value = pending[hits[0]]
        loss = float(value.float().cpu()[0]) if value.numel() else math.nan
        raise NonFiniteLossError(
            f"training loss is {loss} at optimizer step {step} (lr={lr:.4g}, epoch {trainer.current_epoch}); "
            f"training stopped, {self._kept(trainer)}; lower the learning rate (e.g. finder.bounds=[base_lr,max_lr] "
            "below the range test's) or check the data and the model for NaN/inf"
        )

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        names = self.val_metrics if self.val_metrics is not None else sorted(m for m in metrics if is_validation_loss(m))
        bad = [(n, metrics[n]) for n in names if n in metrics and not bool(torch.isfinite(metrics[n]).all())]
        flag = torch.tensor(float(bool(bad)), device=pl_module.device)
        if float(trainer.strategy.reduce(flag, reduce_op="sum")) == 0:  # every rank stops, or none
            return
        name, value = bad[0] if bad else ("a validation loss", torch.tensor(math.nan))
        raise NonFiniteLossError(
            f"validation loss {name} is {float(value.reshape(-1)[0])} at epoch {trainer.current_epoch} "
            f"(optimizer step {trainer.global_step}); training stopped, {self._kept(trainer)}; lower the learning "
            "rate (e.g. finder.bounds=[base_lr,max_lr] below the range test's) or check the validation data and "
            "the model for NaN/inf"
        )

    @staticmethod
    def _kept(trainer: L.Trainer) -> str:
        for callback in trainer.checkpoint_callbacks:
            path = getattr(callback, "last_model_path", "") or ""
            saved = getattr(callback, "saved_steps", {})
            if path and Path(path).is_file():
                step = saved.get(str(Path(path).resolve()))
                at = f" (optimizer step {step})" if step is not None else ""
                return f"the last finite checkpoint is {path}{at}; resume from it with +ckpt_path={path}"
        return "no checkpoint was written"


def keep_going_on_write_errors(logger: Any) -> Any:
    """Make a logger's file writes warn on an error (a full disk, a read-only file) instead of raising.

    Lightning writes ``hparams.yaml`` through ``log_hyperparams()`` (CSV) or ``save()``
    (TensorBoard, at the end of ``fit``), and ``metrics.csv`` through ``save()`` every few steps:
    an ``OSError`` there would end a run that trained well, without its summary. Each distinct
    error warns once, naming the file or folder and the fix.

    Args:
        logger: a Lightning logger; ``None`` or ``False`` pass through.

    Returns:
        ``logger``, whose ``save`` and ``log_hyperparams`` are wrapped in place.
    """
    if not logger:
        return logger
    seen: set[tuple[Any, ...]] = set()

    def warn_once(err: OSError) -> None:
        where = err.filename or getattr(logger, "log_dir", None) or "its folder"
        if (err.errno, where) not in seen:
            seen.add((err.errno, where))
            rank_zero_warn(f"{type(logger).__name__} could not write {where} ({err.strerror or err}); training goes "
                           "on without it; free space there or point logger.save_dir at a writable folder")

    for name in ("save", "log_hyperparams"):
        write = getattr(logger, name, None)
        if write is None or getattr(write, "_keeps_going", False):
            continue

        def guarded(*args: Any, _write: Any = write, **kwargs: Any) -> None:
            try:
                _write(*args, **kwargs)
            except OSError as err:
                warn_once(err)

        functools.update_wrapper(guarded, write)
        guarded._keeps_going = True  # type: ignore[attr-defined]
        setattr(logger, name, guarded)
    return logger
