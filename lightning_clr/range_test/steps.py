"""Step counts of a fit, as Lightning will run them: per epoch, in all, and at cycle ends.

The range test, :class:`~lightning_clr.SnapshotEnsemble` and
:class:`~lightning_clr.FlatnessProbe` all count optimizer steps the same way, here. A
train loader without ``__len__`` (an ``IterableDataset``) has no epoch length:
:func:`steps_per_epoch` then returns ``None`` and only what needs it refuses to run.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_clr.schedules import Schedule

# scheduler -> the spec it was built from; weak, and outside the scheduler so that its
# state_dict stays plain data (checkpoints load with weights_only=True)
_SPECS: weakref.WeakKeyDictionary[Any, Schedule] = weakref.WeakKeyDictionary()


def register_schedule(scheduler: Any, spec: Schedule) -> None:
    """Remember that ``scheduler`` was built from ``spec`` (read back by :func:`installed_schedule`)."""
    _SPECS[scheduler] = spec


def steps_per_epoch(trainer: L.Trainer) -> int | None:
    """Optimizer steps per epoch on each process, or ``None`` when the train loader has no length."""
    trainer.fit_loop.setup_data()  # a no-op once done
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        return None
    return max(1, math.ceil(int(batches) / trainer.accumulate_grad_batches))


def train_batches(trainer: L.Trainer) -> float:
    """Train batches per epoch on each process (``inf`` when the train loader has no length)."""
    trainer.fit_loop.setup_data()  # a no-op once done
    return trainer.num_training_batches


def total_steps(trainer: L.Trainer) -> int | None:
    """Optimizer steps of the whole fit, or ``None`` for a run without a known end.

    A train loader without ``__len__`` and no ``max_steps`` gives a run of unknown length:
    ``None`` (Lightning's estimate is then ``-1``).
    """
    trainer.fit_loop.setup_data()  # estimated_stepping_batches skips it for endless runs
    total = trainer.estimated_stepping_batches
    return int(total) if math.isfinite(total) and total >= 1 else None


def installed_schedule(trainer: L.Trainer) -> Schedule | None:
    """The spec of the schedule installed on ``trainer`` (by :class:`~lightning_clr.LRRangeTest`), if any."""
    return next((_SPECS[c.scheduler] for c in trainer.lr_scheduler_configs if c.scheduler in _SPECS), None)


def cycle_ends(trainer: L.Trainer, schedule: Schedule | None = None) -> list[int]:
    """Optimizer-step counts at which the schedule's cycles end in this ``fit``.

    Args:
        trainer: a Trainer inside ``fit`` (call from ``on_train_start`` or later).
        schedule: the schedule spec; ``None`` takes the installed one (:func:`installed_schedule`).

    Raises:
        MisconfigurationException: without a schedule, or when the run length or the
            epoch length is unknown.
    """
    spec = schedule if schedule is not None else installed_schedule(trainer)
    if spec is None:
        raise MisconfigurationException(
            "no schedule to take cycle ends from: add an LRRangeTest to the Trainer's callbacks "
            "or pass schedule=<a lightning_clr.schedules spec>."
        )
    total = total_steps(trainer)
    if total is None:
        raise MisconfigurationException("cycle ends need the length of the run; set max_epochs or max_steps on the Trainer.")
    per_epoch = steps_per_epoch(trainer)
    if per_epoch is None:
        raise MisconfigurationException(
            "cycle ends in epochs need the epoch length, but the train dataloader has no __len__; "
            "set limit_train_batches to an int, or give the schedule its cycle lengths in steps."
        )
    return spec.cycle_ends(steps_per_epoch=per_epoch, total_steps=total)
