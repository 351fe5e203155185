"""What must hold inside ``fit`` before the range test may train: checked before any step.

Each check raises ``MisconfigurationException`` with one line naming what to change.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateFinder
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.parsing import lightning_hasattr

from lightning_clr.range_test.lr_free import multiplier_lr_reason
from lightning_clr.schedules.base import undo_momentum_cycling


def _refuse(message: str) -> None:
    raise MisconfigurationException(f"LRRangeTest: {message}")


def check_callbacks(trainer: L.Trainer) -> None:
    """Refuse another LR finder among the callbacks (called in ``setup``, before any callback's ``on_fit_start``)."""
    if any(isinstance(c, LearningRateFinder) for c in trainer.callbacks):
        _refuse("Lightning's LearningRateFinder is among the callbacks too, and both would sweep the LR; keep one.")


def sweep_optimizer(trainer: L.Trainer, pl_module: L.LightningModule, *, restored: bool,
                    replace_scheduler: bool) -> torch.optim.Optimizer:
    """The one optimizer the sweep and the schedule drive, with a replaced scheduler's momentum undone.

    An optimizer whose ``lr`` multiplies a step size it estimates (Prodigy, D-Adaptation) is
    refused: see :func:`~lightning_clr.range_test.lr_free.multiplier_lr_reason`.

    Args:
        trainer: the Trainer in ``on_fit_start``.
        pl_module: its module.
        restored: whether the range test's state came from ``ckpt_path``.
        replace_scheduler: whether a scheduler from ``configure_optimizers`` may be replaced.
    """
    if not pl_module.automatic_optimization:
        _refuse("it drives the optimizer itself and needs automatic optimization; set "
                "`self.automatic_optimization = True` or remove the callback.")
    if len(trainer.optimizers) != 1:
        _refuse(f"it needs exactly one optimizer, configure_optimizers returned {len(trainer.optimizers)}.")
    reason = multiplier_lr_reason(trainer.optimizers[0])
    if reason is not None:  # Prodigy, D-Adaptation: with bounds= too, no LR of theirs means what a schedule needs
        _refuse(reason)
    if trainer.ckpt_path is not None and not restored:
        _refuse(f"the checkpoint {trainer.ckpt_path} was written without LRRangeTest, so its scheduler state would "
                "be loaded into the found schedule; resume it without LRRangeTest, or start a new run from its "
                "weights (e.g. Module.load_from_checkpoint) without ckpt_path.")
    if trainer.lr_scheduler_configs and not replace_scheduler:
        names = ", ".join(type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs)
        _refuse(f"configure_optimizers returned a scheduler ({names}) and replace_scheduler=False; remove that "
                "scheduler or set replace_scheduler=True to let LRRangeTest install its schedule.")
    optimizer = trainer.optimizers[0]
    if trainer.lr_scheduler_configs:
        undone = undo_momentum_cycling(optimizer)
        if undone:
            rank_zero_warn(f"LRRangeTest: the replaced scheduler had changed the optimizer's {undone}")
    return optimizer


def lr_attribute(pl_module: L.LightningModule, attr_name: str) -> str:
    """The attribute (or hparam) that ``update_attr=True`` writes the found LR into."""
    names = [attr_name] if attr_name else ["lr", "learning_rate"]
    found = next((n for n in names if lightning_hasattr(pl_module, n)), None)
    if found is None:
        _refuse(f"update_attr=True, but the module has no attribute or hparam {' or '.join(names)}; add one, "
                "pass attr_name=..., or set update_attr=False.")
    return found


def group_ratios(optimizer: torch.optim.Optimizer, group_scales: list[float] | None) -> list[float]:
    """Each param group's LR relative to the first: from ``group_scales`` or the optimizer's LRs."""
    groups = len(optimizer.param_groups)
    if group_scales is not None:
        if len(group_scales) != groups:
            raise MisconfigurationException(
                f"group_scales={group_scales} has {len(group_scales)} entries but the optimizer has {groups} param "
                "groups; give one scale per group, or group_scales=None to keep their LR ratios."
            )
        return [s / group_scales[0] for s in group_scales]  # positive: checked in settings.py
    first = optimizer.param_groups[0]["lr"]
    if not first > 0:
        raise MisconfigurationException(
            f"the first param group's lr is {first}; LRRangeTest keeps the groups' LR ratios relative to it, "
            "so it must be > 0."
        )
    ratios = [g["lr"] / first for g in optimizer.param_groups]
    for g, ratio in enumerate(ratios):
        if not ratio > 0:
            raise MisconfigurationException(
                f"param group {g} has lr {optimizer.param_groups[g]['lr']} (set where the optimizer is made, e.g. a "
                "head_lr_scale of 0); LRRangeTest keeps each group's LR ratio to the first group, so every group "
                "needs an lr > 0, or set group_scales=[...] with one positive scale per group."
            )
    return ratios
