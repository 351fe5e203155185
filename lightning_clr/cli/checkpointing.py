"""Checkpoints that survive any kill and always hold the last good state.

:class:`SafeCheckpoint` is Lightning's ``ModelCheckpoint`` with four guarantees added:

1. **Atomic writes next to the target.** Lightning writes a checkpoint to a temporary
   file in ``$TMPDIR`` and moves it into place; when ``$TMPDIR`` is on another file system
   (a tmpfs, common on clusters) the move is a copy over the old file, and a kill during
   it leaves a truncated ``last.ckpt``. :class:`AtomicCheckpointIO` writes the temporary
   file in the target's own folder, syncs it to disk and renames it over the target
   (``os.replace``, atomic on POSIX), so the previous file stays whole until the new one
   is complete. A kill during the write leaves at most one ``.last.ckpt.<host>.<pid>.tmp``,
   removed by the next run that saves checkpoints to that folder.
2. **Never a non-finite checkpoint over a finite one.** A state whose weights or optimizer
   state hold NaN/inf is not written; a warning names the tensor and the step, and the
   file keeps the last finite state.
3. **``last.ckpt`` is the last state.** It is saved at the end of ``fit`` (after the final
   validation) and when the run is stopped by SIGTERM or Ctrl+C, not only every
   ``every_n_train_steps``. The first Ctrl+C stops after the current training step (as
   SIGTERM does, at a step boundary, so the saved state resumes exactly); a second one
   aborts at once.
4. **Preflight.** At ``setup``, before the range test, the folder is checked to be
   writable with room for one checkpoint (:func:`~lightning_clr.cli.faults.check_writable`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lightning_clr.cli.faults import CheckpointWriteError, check_writable, first_non_finite

__all__ = ["AtomicCheckpointIO", "SafeCheckpoint", "interrupt_status"]


def _is_local(path: Any) -> bool:
    return isinstance(get_filesystem(str(path)), LocalFileSystem)


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes next to the target and renames, and refuses non-finite states.

    Remote paths (``s3://`` and other fsspec protocols) are left to ``TorchCheckpointIO``.

    Attributes:
        saved_steps: the ``global_step`` of the state in each file written, by resolved path.
        refused: ``(path, tensor key, global_step)`` of every state not written because it was not finite.
    """

    def __init__(self) -> None:
        super().__init__()
        self.saved_steps: dict[str, int | None] = {}
        self.refused: list[tuple[str, str, int | None]] = []

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path).resolve()
        step = checkpoint.get("global_step")
        bad = first_non_finite(checkpoint.get("state_dict", {}), "state_dict") or first_non_finite(
            checkpoint.get("optimizer_states", []), "optimizer_states")
        if bad is not None:
            self.refused.append((str(target), bad, step))
            kept = self.saved_steps.get(str(target))
            keeps = (f"it keeps optimizer step {kept}" if kept is not None
                     else "it keeps its previous content" if target.exists() else "nothing was written")
            rank_zero_warn(f"checkpoint {target} not written: {bad} is not finite at optimizer step {step}; {keeps}")
            return None
        temp = _temp_name(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, target)
        except BaseException as err:
            temp.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise CheckpointWriteError(
                    f"could not write checkpoint {target} ({err.strerror or err}); the file there is unchanged; "
                    "free space or point callbacks.checkpoint.dirpath at a writable folder"
                ) from err
            raise
        _fsync_dir(target.parent)
        self.saved_steps[str(target)] = step
        return None


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files :class:`AtomicCheckpointIO` left in ``folder`` when killed.

    Only files of this host whose process is gone are removed.

    Returns:
        The files removed.
    """
    removed = []
    host = socket.gethostname()
    for temp in folder.glob(f".*.{host}.*.tmp"):
        pid = temp.name[: -len(".tmp")].rsplit(".", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, someone else's
        temp.unlink(missing_ok=True)
        removed.append(temp)
    return removed


class SafeCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with atomic writes, no non-finite overwrite, ``last.ckpt`` at the end and on signals.

    Takes every argument of ``ModelCheckpoint``. See the module docstring for what is added.
    It installs :class:`AtomicCheckpointIO` as the strategy's checkpoint IO when that is
    Lightning's default ``TorchCheckpointIO`` (a custom one is kept, with a warning).

    Attributes:
        saved_steps: the optimizer step in each file written, by resolved path (rank zero).
        stopped_by: the signal that stopped the run (``signal.SIGTERM`` or ``signal.SIGINT``), else ``None``.

    Example::

        checkpoint = SafeCheckpoint(dirpath="checkpoints", every_n_train_steps=50, save_last=True, save_top_k=0)
        trainer = L.Trainer(callbacks=[LRRangeTest(), StopOnNonFiniteLoss(), checkpoint])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopped_by: int | None = None
        self._io: AtomicCheckpointIO | None = None
        self._training = False
        self._sigint_seen = False
        self._previous_sigint: Any = None

    @property
    def saved_steps(self) -> dict[str, int | None]:
        return self._io.saved_steps if self._io is not None else {}

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AtomicCheckpointIO):
            self._io = io
        elif type(io) is TorchCheckpointIO:
            self._io = AtomicCheckpointIO()
            trainer.strategy.checkpoint_io = self._io
        else:
            rank_zero_warn(f"SafeCheckpoint: the strategy's own {type(io).__name__} writes the checkpoints; "
                           "atomic replacement and the non-finite guard are up to it")
        if trainer.is_global_zero and self.dirpath and _is_local(self.dirpath):
            size = sum(t.numel() * t.element_size() for t in pl_module.state_dict().values()
                       if isinstance(t, torch.Tensor))
            folder = check_writable(self.dirpath, "callbacks.checkpoint.dirpath", need_bytes=size)
            remove_stale_temp_files(folder)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._training, self._sigint_seen = True, False
        if threading.current_thread() is threading.main_thread() and callable(signal.getsignal(signal.SIGTERM)):
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        """First Ctrl+C: stop at the end of this step, as SIGTERM does; second: abort now."""
        if self._sigint_seen:
            self._restore_sigint()
            raise KeyboardInterrupt
        self._sigint_seen, self.stopped_by = True, signal.SIGINT
        print("\nCtrl+C: stopping after this training step and saving last.ckpt; press Ctrl+C again to abort at once",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM handler stops all ranks at the same step

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
        self._previous_sigint = None

    def _last_path(self) -> str:
        return self.last_model_path or os.path.join(self.dirpath or "", self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)

    def _save_last(self, trainer: L.Trainer) -> str | None:
        """Write ``last.ckpt`` unless it already holds this step; collective under DDP."""
        if not self.save_last or not self.dirpath:
            return None
        path = self._last_path()
        need = self._io is None or self._io.saved_steps.get(str(Path(path).resolve())) != trainer.global_step
        if trainer.strategy.broadcast(need):
            self.last_model_path = path
            trainer.save_checkpoint(path, self.save_weights_only)
        return path

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._training = False
        self._restore_sigint()
        if trainer.global_step > 0 and not trainer.sanity_checking:
            self._save_last(trainer)

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        training, self._training = self._training, False
        self._restore_sigint()
        if isinstance(exception, SIGTERMException):
            self.stopped_by = self.stopped_by or signal.SIGTERM
            safe = trainer.training or trainer.world_size == 1  # every rank stops at the same training step
        elif isinstance(exception, KeyboardInterrupt) and not self._sigint_seen:
            self.stopped_by = signal.SIGINT
            safe = trainer.world_size == 1  # ranks may stop at different points: no collective save
        else:
            return  # a crash (or a NaN loss): last.ckpt keeps the last periodic, finite state
        name = signal.Signals(self.stopped_by).name
        if not (training and safe and trainer.global_step > 0):
            rank_zero_info(f"{name}: stopped at optimizer step {trainer.global_step}; last.ckpt not updated")
            return
        path = self._save_last(trainer)
        if path:
            rank_zero_info(f"{name}: stopped at optimizer step {trainer.global_step}; saved {path}; "
                           f"resume with +ckpt_path={path}")

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_sigint()
        super().teardown(trainer, pl_module, stage)


def interrupt_status(trainer: L.Trainer) -> int:
    """The exit status of a run stopped by a signal: 128 + the signal's number (SIGTERM 143, Ctrl+C 130).

    Without a :class:`SafeCheckpoint` (which reports what it saved) this says on one line that nothing was saved.
    """
    for callback in trainer.callbacks:
        if isinstance(callback, SafeCheckpoint) and callback.stopped_by is not None:
            return 128 + int(callback.stopped_by)
    rank_zero_info(f"SIGTERM: stopped at optimizer step {trainer.global_step}; no checkpoint was saved "
                   "(add +callbacks=checkpoint to save last.ckpt on SIGTERM)")
    return 128 + int(signal.SIGTERM)
