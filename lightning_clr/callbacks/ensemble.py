"""Snapshot ensembles (Huang et al., "Snapshot Ensembles: Train 1, get M for free", arXiv 1704.00109).

Every cycle of a cyclical schedule ends at a low LR, in a minimum of its own. :class:`SnapshotEnsemble`
keeps the model at each of those points (in CPU memory and as a weights file), and at every
validation after the second snapshot scores the ensemble of the last ``m`` snapshots, the mean of
their softmax outputs, next to the single model. :func:`load_ensemble` turns the saved files back
into one ``nn.Module`` for inference.

Tags written: ``ensemble/val_loss`` (negative log-likelihood of the averaged probabilities),
``ensemble/val_acc`` and ``ensemble/size`` (members), once per validation with two or more snapshots.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.func import functional_call
from typing_extensions import override

from lightning_clr.callbacks.batches import BatchLayout, Picker, first_batch
from lightning_clr.range_test import steps
from lightning_clr.range_test.figure import write_cause
from lightning_clr.schedules import Schedule

SNAPSHOT_FILE = re.compile(r"^cycle_(\d+)\.pt$")
#: how ``torch.load(weights_only=True)`` fails on a file that is not plain tensors (or cannot be read)
_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError,
                AttributeError, IndexError)
#: the lines of a refused ``torch.load(weights_only=True)`` that say what the file held
_REFUSAL = re.compile(r"global|operand|magic|zip|archive|eof", re.IGNORECASE)
#: the foreign global a refused pickle names, in the wordings of torch's weights-only unpickler
_FOREIGN = re.compile(r"unsupported global:? (?:GLOBAL )?([\w.]+)", re.IGNORECASE)


class SnapshotFileError(ValueError):
    """A snapshot file, or a checkpoint's reference to one, is not what :class:`SnapshotEnsemble` writes.

    The message is one line naming the file and the fix. Nothing from the file was run: snapshot
    files are read with ``torch.load(weights_only=True)``, which refuses any object but tensors
    and plain containers.
    """


def _refusal(err: BaseException) -> str:
    """What a failed ``torch.load`` says the file held, in one sentence, e.g. ``it names the foreign global os.system``."""
    foreign = _FOREIGN.search(str(err))
    if foreign is not None:
        return f"it names the foreign global {foreign.group(1).rstrip('.')}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = next((line for line in lines[1:] if _REFUSAL.search(line)), lines[0] if lines else "")
    return f"{type(err).__name__}: {line.split('. ')[0].rstrip('.')}" if line else type(err).__name__


def read_snapshot(path: str | Path) -> dict[str, torch.Tensor]:
    """A snapshot file's ``state_dict``, read with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        SnapshotFileError: the file does not load as plain tensors (a pickle of another object, a
            foreign global, not a torch file at all) or holds something other than a mapping of
            names to tensors; one line naming the file. Nothing from the file runs.
    """
    path = Path(path)
    fix = "delete it, or point at the snapshots/ folder of a run trained with SnapshotEnsemble"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as err:  # any way the file fails to load means it is not a snapshot
        raise SnapshotFileError(f"'{path}' is not a snapshot file SnapshotEnsemble wrote ({_refusal(err)}); nothing "
                                f"from it was loaded or run; {fix}") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        held = type(state).__name__ if not isinstance(state, Mapping) else "a mapping with values other than tensors"
        raise SnapshotFileError(f"'{path}' holds {held}, not a model's state_dict (names to tensors); {fix}")
    return dict(state)


def _snapshot_path(entry: Any) -> Path | None:
    """The file a checkpoint's snapshot entry names, checked: ``<folder>/cycle_<cycle>.pt`` with no ``..``.

    Raises:
        SnapshotFileError: a path that is not a snapshot file's (another name, ``..`` in it, not a string),
            or a cycle or step that is not a count.
    """
    fix = "resume from a checkpoint that SnapshotEnsemble wrote, or remove its SnapshotEnsemble state"
    if not isinstance(entry, Mapping) or not all(_is_count(entry.get(k)) for k in ("cycle", "step")):
        raise SnapshotFileError(f"SnapshotEnsemble: the checkpoint holds the snapshot entry {entry!r}, not "
                                f"{{'cycle': int, 'step': int, 'path': str}}; {fix}")
    raw = entry.get("path")
    if raw is None:
        return None
    path = Path(raw) if isinstance(raw, str) else None
    if path is None or path.name != f"cycle_{entry['cycle']}.pt" or ".." in path.parts:
        raise SnapshotFileError(f"SnapshotEnsemble: the checkpoint names {raw!r} as the snapshot of cycle "
                                f"{entry['cycle']}, not a file <folder>/cycle_{entry['cycle']}.pt without '..'; {fix}")
    return path


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass
class Snapshot:
    """One model saved at the end of an LR cycle.

    Attributes:
        cycle: 1-based index of the cycle that ended.
        step: the optimizer step at which it ended.
        state: the model's ``state_dict`` on the CPU.
        path: the weights file, or ``None`` when nothing was written.
    """

    cycle: int
    step: int
    state: dict[str, torch.Tensor]
    path: Path | None = None


class SnapshotEnsemble(Callback):
    """Keeps the model at the end of every LR cycle and scores the ensemble of the last ``m``.

    The cycle ends come from the schedule (``Schedule.cycle_ends``): each SGDR restart, every
    ``2 * step_size`` steps of the triangular family, the end of the run for schedules
    without cycles. At each one the model's ``state_dict`` is copied to CPU memory and written
    (rank zero) to ``<dir>/cycle_<k>.pt``, loadable with ``torch.load(..., weights_only=True)``.
    ``<dir>`` is ``dirpath``, else ``snapshots/`` in the checkpoint folder of the run, else in
    ``trainer.log_dir``.

    With two or more snapshots, every validation also runs the last ``m`` snapshots on the
    validation batches (recomputed only when a snapshot joins) and logs ``ensemble/val_loss``,
    ``ensemble/val_acc`` and ``ensemble/size`` next to ``val/*``. Validation batches must be
    taken apart by ``inputs`` and ``target`` (a :class:`~lightning_clr.callbacks.batches.BatchLayout`):
    ``(x, y)`` pairs by default, a dict with ``inputs="x", target="y"``, a model with several
    inputs with ``inputs=[0, 1], target=2``; the module's ``forward(*inputs)`` must return
    logits. The layout is checked on the first training batch at the start of ``fit`` and on
    the first validation batch before the first training step, running the model once on
    each; a mismatch fails there with one line naming ``inputs``/``target``. Strategies that
    shard parameters (FSDP, DeepSpeed stage 3) are not supported.

    Which schedules give an ensemble: those with several cycle ends in the run, SGDR
    (``num_cycles >= 2``) and the triangular family with more than one cycle. 1cycle and the
    annealings end once, at the last step, so they give one snapshot and a warning.

    Args:
        num_snapshots: ``m``, the number of most recent snapshots to ensemble (and to keep in
            memory; all are kept on disk). ``None`` uses every snapshot.
        schedule: the schedule whose cycle ends to use; ``None`` takes the one an
            :class:`~lightning_clr.LRRangeTest` installed on the Trainer (``steps.installed_schedule``).
        dirpath: folder for the weights files; ``None`` picks the run's checkpoint folder.
        save_weights: write a weights file per snapshot.
        evaluate: score the ensemble at each validation.
        inputs: where the model's inputs are in a batch: a position, a key, a list of those
            (a model with several inputs), or a callable taking the batch.
        target: where the integer class labels are: a position, a key, or a callable.

    Raises:
        ValueError: for ``num_snapshots < 2``.
        lightning_clr.callbacks.batches.BatchLayoutError: at the start of ``fit``, when ``inputs`` /
            ``target`` do not fit the batches.

    Example::

        import lightning as L
        from lightning_clr import LRRangeTest, SnapshotEnsemble, load_ensemble, schedules

        finder = LRRangeTest(schedule=schedules.SGDR(cycle_epochs=2, cycle_mult=1))
        snapshots = SnapshotEnsemble(num_snapshots=3)
        trainer = L.Trainer(max_epochs=8, callbacks=[finder, snapshots])
        trainer.fit(model, datamodule=dm)
        ensemble = load_ensemble(model, snapshots.dirpath, last=3)   # an nn.Module: mean softmax
    """

    def __init__(
        self,
        num_snapshots: int | None = None,
        schedule: Schedule | None = None,
        dirpath: str | Path | None = None,
        save_weights: bool = True,
        evaluate: bool = True,
        inputs: Picker = 0,
        target: Picker = 1,
    ) -> None:
        if num_snapshots is not None and (isinstance(num_snapshots, bool) or int(num_snapshots) < 2):
            raise ValueError(
                f"num_snapshots must be >= 2 (an ensemble) or None for all, got {num_snapshots!r}"
            )
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a lightning_clr.schedules spec, got {type(schedule).__name__}")
        self._m = None if num_snapshots is None else int(num_snapshots)
        self._schedule = schedule
        self._dirpath = Path(dirpath) if dirpath is not None else None
        self._save, self._evaluate = save_weights, evaluate
        self.layout = BatchLayout(inputs, target, owner="SnapshotEnsemble")
        self.snapshots: list[Snapshot] = []
        self.dirpath: Path | None = self._dirpath
        self.cycle_ends: list[int] = []
        self._members: list[dict[str, torch.Tensor]] | None = None
        self._sums: torch.Tensor | None = None
        self._cache: tuple[tuple[int, ...], float, float] | None = None

    # ------------------------------------------------------------------ snapshots

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._evaluate:  # fail before any step (and before a range test that may come later)
            trainer.fit_loop.setup_data()
            self._check(trainer, pl_module, trainer.train_dataloader)

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule, loaders: Any) -> None:
        batch = first_batch(loaders)
        if batch is not None:
            self.layout.check(trainer.strategy.batch_to_device(batch), pl_module)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._evaluate:  # the validation loaders exist from here on
            self._check(trainer, pl_module, trainer.val_dataloaders)
        self.cycle_ends = steps.cycle_ends(trainer, self._schedule)
        if len(self.cycle_ends) < 2:
            rank_zero_warn(
                f"SnapshotEnsemble: the schedule ends {len(self.cycle_ends)} cycle(s) in "
                f"{int(trainer.estimated_stepping_batches)} steps, so there will be no ensemble; use a cyclical "
                "schedule (sgdr, triangular2) with shorter cycles or train longer."
            )
        if self._dirpath is None:
            ckpt = trainer.checkpoint_callback
            base = getattr(ckpt, "dirpath", None) or trainer.log_dir or trainer.default_root_dir
            self.dirpath = Path(base) / "snapshots"
        self._adopt(trainer)

    def _adopt(self, trainer: L.Trainer) -> None:
        """Write the snapshots restored from a checkpoint into this run's ``dirpath``.

        A resume into a new folder would otherwise leave them in the earlier run's folder, and
        ``load_ensemble(dirpath)`` would miss members the ensemble counts.
        """
        if not self._save or self.dirpath is None:
            return
        for snapshot in self.snapshots:
            path = self.dirpath / f"cycle_{snapshot.cycle}.pt"
            if snapshot.path is not None and snapshot.path.resolve() == path.resolve():
                continue
            written = self._write(snapshot.state, path) if trainer.is_global_zero else True
            snapshot.path = path if written else None

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step not in self.cycle_ends or any(s.step == step for s in self.snapshots):
            return  # not a cycle end, or a later micro-batch of the same optimizer step
        self.take(trainer, pl_module, cycle=self.cycle_ends.index(step) + 1)

    def take(self, trainer: L.Trainer, pl_module: L.LightningModule, cycle: int) -> Snapshot:
        """Copy the model to CPU memory now and write its weights file (rank zero)."""
        state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}
        path = None
        if self._save and self.dirpath is not None:
            path = self.dirpath / f"cycle_{cycle}.pt"
            if trainer.is_global_zero and not self._write(state, path):
                path = None
        snapshot = Snapshot(cycle=cycle, step=trainer.global_step, state=state, path=path)
        self._keep(snapshot)
        return snapshot

    @staticmethod
    def _write(state: dict[str, torch.Tensor], path: Path) -> bool:
        """Write ``state`` to ``path`` atomically; whether it was written.

        A failed write (a full disk, a read-only folder) warns on one line and leaves no partial
        file: the snapshot stays in memory, in the ensemble, and training goes on.
        """
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:  # a Python file: a failed write raises OSError, not a RuntimeError
                torch.save(state, f)
            tmp.replace(path)  # atomic: a reader never sees half a file
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            rank_zero_warn(f"SnapshotEnsemble: could not write '{path}' ({write_cause(err)}); the snapshot stays in "
                           "memory and in the ensemble, training goes on (load_ensemble will not find it)")
            return False
        return True

    def _keep(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)
        if self._m is not None and len(self.snapshots) > self._m:
            del self.snapshots[: len(self.snapshots) - self._m]  # older ones stay on disk only

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": [{"cycle": s.cycle, "step": s.step, "path": str(s.path) if s.path else None}
                              for s in self.snapshots]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the snapshots a checkpoint names; a missing file warns, a crafted entry or file is refused.

        Raises:
            SnapshotFileError: an entry whose path is not ``<folder>/cycle_<cycle>.pt`` (``..`` in it,
                another file name), or a file that is not a snapshot (see :func:`read_snapshot`).
        """
        self.snapshots = []
        entries = list(state_dict.get("snapshots", []))
        paths = [_snapshot_path(entry) for entry in entries]  # every entry checked before any file is opened
        for entry, path in zip(entries, paths):
            if path is None or not path.is_file():
                rank_zero_warn(f"SnapshotEnsemble: snapshot of cycle {entry['cycle']} is not on disk ({path}); "
                               "the ensemble continues without it.")
                continue
            self._keep(Snapshot(entry["cycle"], entry["step"], read_snapshot(path), path))

    # ------------------------------------------------------------------ evaluation

    def _chosen(self) -> list[Snapshot]:
        return self.snapshots if self._m is None else self.snapshots[-self._m:]

    @override
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._members = None
        if not self._evaluate or trainer.sanity_checking or len(self.snapshots) < 2:
            return
        if self._cache is not None and self._cache[0] == tuple(s.step for s in self._chosen()):
            return  # same members as last time: log the cached scores
        device = pl_module.device
        self._members = [{k: v.to(device) for k, v in s.state.items()} for s in self._chosen()]
        self._sums = torch.zeros(3, dtype=torch.float64, device=device)  # nll, correct, count

    @override
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._members is None:
            return
        args, y = self.layout.split(batch)
        with trainer.precision_plugin.val_step_context():
            probs = ensemble_probs(pl_module, self._members, *args)
        nll = F.nll_loss(probs.clamp_min(torch.finfo(probs.dtype).tiny).log(), y, reduction="sum")
        correct = (probs.argmax(dim=1) == y).sum()
        self._sums[0] += nll.double()
        self._sums[1] += correct.double()
        self._sums[2] += y.numel()

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._members is not None:
            sums = trainer.strategy.reduce(self._sums, reduce_op="sum")
            nll, correct, count = (float(v) for v in sums)
            steps = tuple(s.step for s in self._chosen())
            self._cache = (steps, nll / max(count, 1.0), correct / max(count, 1.0))
            self._members, self._sums = None, None
        elif self._cache is None or trainer.sanity_checking or len(self.snapshots) < 2 or not self._evaluate:
            return
        _, loss, acc = self._cache
        # the sums were reduced over all processes already: every rank logs the same value
        # (sync_dist=True only averages identical numbers, and keeps Lightning from warning)
        pl_module.log("ensemble/val_loss", loss, on_epoch=True, sync_dist=True)
        pl_module.log("ensemble/val_acc", acc, on_epoch=True, sync_dist=True)
        pl_module.log("ensemble/size", float(len(self._cache[0])), on_epoch=True, sync_dist=True)


def ensemble_probs(model: nn.Module, states: Sequence[Mapping[str, torch.Tensor]], *inputs: Any) -> torch.Tensor:
    """Mean of ``softmax(model(*inputs))`` over the weights in ``states`` (the module itself is untouched).

    Args:
        model: the module whose ``forward`` returns logits.
        states: ``state_dict``-like mappings, on the module's device.
        inputs: the model's inputs for one batch.

    Returns:
        ``(batch, classes)`` probabilities in float32.
    """
    total = None
    for state in states:
        probs = F.softmax(functional_call(model, dict(state), inputs).float(), dim=1)
        total = probs if total is None else total + probs
    assert total is not None, "need at least one state"
    return total / len(states)


def snapshot_files(dirpath: str | Path) -> list[Path]:
    """The ``cycle_<k>.pt`` files in ``dirpath``, ordered by ``k``.

    Raises:
        FileNotFoundError: when the folder holds no snapshot file.
    """
    folder = Path(dirpath)
    files = sorted(
        (p for p in folder.glob("cycle_*.pt") if SNAPSHOT_FILE.match(p.name)),
        key=lambda p: int(SNAPSHOT_FILE.match(p.name).group(1)),  # type: ignore[union-attr]
    )
    if not files:
        raise FileNotFoundError(
            f"no snapshot files (cycle_<k>.pt) in '{folder}'; point at the snapshots/ folder of a run "
            "trained with SnapshotEnsemble"
        )
    return files


class EnsembleModel(nn.Module):
    """The snapshots as one module: ``forward`` returns the mean of the members' softmax.

    Args:
        model: a module of the trained architecture (its weights are not used); copied per member.
        states: one ``state_dict`` per member.

    Raises:
        ValueError: for an empty ``states``.
    """

    def __init__(self, model: nn.Module, states: Sequence[Mapping[str, torch.Tensor]]) -> None:
        super().__init__()
        if not states:
            raise ValueError("an ensemble needs at least one state_dict, got none")
        members = []
        for state in states:
            member = copy.deepcopy(model)
            member.load_state_dict(state)
            members.append(member.eval())
        self.members = nn.ModuleList(members)

    def forward(self, *inputs: Any) -> torch.Tensor:
        probs = [F.softmax(member(*inputs).float(), dim=1) for member in self.members]
        return torch.stack(probs).mean(dim=0)


def load_ensemble(model: nn.Module, dirpath: str | Path, last: int | None = None) -> EnsembleModel:
    """Load the snapshots a :class:`SnapshotEnsemble` wrote as an :class:`EnsembleModel`.

    Files are read with ``torch.load(..., weights_only=True)`` (:func:`read_snapshot`).

    Args:
        model: a module of the trained architecture (e.g. a fresh ``Classifier``).
        dirpath: the snapshots folder (``SnapshotEnsemble.dirpath``).
        last: ensemble only the last ``last`` snapshots; ``None`` takes all.

    Raises:
        FileNotFoundError: when ``dirpath`` holds no snapshot.
        SnapshotFileError: a ``cycle_<k>.pt`` that is not a snapshot file; one line naming it.
        ValueError: for ``last < 1``.

    Example::

        ensemble = load_ensemble(Classifier(CNN1D()), "outputs/.../checkpoints/snapshots", last=3)
        probs = ensemble(x)                 # (batch, classes), rows sum to 1
    """
    files = snapshot_files(dirpath)
    if last is not None:
        if last < 1:
            raise ValueError(f"last must be >= 1 or None, got {last}")
        files = files[-last:]
    return EnsembleModel(model, [read_snapshot(f) for f in files])
