"""Resume policy, as pure functions on plain data: what a run planned, and why a resume differs.

A checkpoint keeps the schedule's step, not its shape: Lightning loads the scheduler's
``state_dict`` into whatever scheduler the new run builds. So :class:`LRRangeTest` saves
the :func:`plan` of the run next to its result, and on resume refuses (before any
training) a run whose plan differs in anything that would move the LR off the curve the
checkpoint was following: the schedule's shape, the bounds, the param groups' ratios, the
run length (for schedules that span the run) or the epoch length (for schedules measured
in epochs). A schedule field that a checkpoint of an earlier version did not save (one
added since, e.g. SGDR's ``restart_warmup_steps``) counts as its default: that version
trained as the default does.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, fields
from typing import Any

from lightning_clr.schedules import SCHEDULES, Schedule


def describe(spec: Schedule | None) -> dict[str, Any]:
    """A schedule spec as plain data: its class name and its fields (``{"spec": None}``: no schedule)."""
    if spec is None:
        return {"spec": None}
    return {"spec": type(spec).__name__, **asdict(spec)}


def plan(
    spec: Schedule | None,
    bounds: tuple[float, float],
    ratios: list[float],
    steps_per_epoch: int | None,
    total_steps: int | None,
) -> dict[str, Any]:
    """What a run's LR depends on, as plain data (checkpoints load with ``weights_only=True``).

    Step counts the schedule does not use are left out, so that, e.g., a constant LR may
    resume with a longer run. ``spec=None`` is a Schedule-Free optimizer trained without a
    schedule, at a constant ``lr`` after its own warm-up.
    """
    return {
        "schedule": describe(spec),
        "bounds": [float(b) for b in bounds],
        "group_ratios": [float(r) for r in ratios],
        "total_steps": total_steps if spec is not None and spec.needs_total_steps else None,
        "steps_per_epoch": steps_per_epoch if spec is not None and spec.needs_epoch_length else None,
    }


def field_defaults(name: str | None) -> dict[str, Any]:
    """The default of every field of the schedule spec class called ``name`` (``{}`` for one this version lacks)."""
    spec = next((cls for cls in SCHEDULES.values() if cls.__name__ == name), None)
    if spec is None:
        return {}
    defaults = {}
    for f in fields(spec):
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def with_defaults(described: dict[str, Any]) -> dict[str, Any]:
    """A schedule as :func:`describe` gives it, with each field it lacks at that field's default."""
    return {**field_defaults(described.get("spec")), **described}


def _spec_text(described: dict[str, Any]) -> str:
    if described["spec"] is None:
        return "no schedule (a Schedule-Free optimizer)"
    return f"{described['spec']}({', '.join(f'{k}={v!r}' for k, v in described.items() if k != 'spec')})"


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-9) for x, y in zip(a, b))


def mismatch(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why the run planned as ``now`` would not continue the checkpoint planned as ``saved``.

    Args:
        saved: the :func:`plan` stored in the checkpoint (keys missing in older
            checkpoints are not compared; a schedule field missing there counts as its default).
        now: the :func:`plan` of this run.

    Returns:
        ``None`` when the resume continues the checkpoint's LR exactly, else one line
        naming the difference and the fix.
    """
    fix = "or start a new run without ckpt_path"
    if "schedule" in saved and with_defaults(saved["schedule"]) != now["schedule"]:
        return (f"the checkpoint trained with {_spec_text(with_defaults(saved['schedule']))} but this run configures "
                f"{_spec_text(now['schedule'])}; resume with the checkpoint's schedule settings, {fix}")
    if "bounds" in saved and not _close(saved["bounds"], now["bounds"]):
        (b0, m0), (b1, m1) = saved["bounds"], now["bounds"]
        return (f"the checkpoint trained between base_lr={b0:g} and max_lr={m0:g} but this run asks for "
                f"bounds=({b1:g}, {m1:g}); resume without bounds (or with the same ones), {fix}")
    if "group_ratios" in saved and not _close(saved["group_ratios"], now["group_ratios"]):
        return (f"the checkpoint trained its param groups at LR ratios {saved['group_ratios']} but this run "
                f"has {now['group_ratios']}; resume with the same group_scales, {fix}")
    name = now["schedule"]["spec"] or "the Schedule-Free optimizer"
    if None not in (saved.get("total_steps"), now["total_steps"]) and saved["total_steps"] != now["total_steps"]:
        return (f"{name} spans the whole run, which the checkpoint planned as {saved['total_steps']} optimizer "
                f"steps, but this run has {now['total_steps']}; resume with the same trainer.max_epochs / "
                f"max_steps, {fix}")
    if None not in (saved.get("steps_per_epoch"), now["steps_per_epoch"]) and (
        saved["steps_per_epoch"] != now["steps_per_epoch"]
    ):
        return (f"{name} measures its cycles in epochs of {saved['steps_per_epoch']} optimizer steps in the "
                f"checkpoint, but this run has {now['steps_per_epoch']} per epoch; resume with the checkpoint's "
                f"data.batch_size, trainer.limit_train_batches, trainer.accumulate_grad_batches and trainer.devices "
                f"(whichever changed), {fix}")
    return None
