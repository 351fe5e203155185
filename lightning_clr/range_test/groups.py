"""Param groups added during training (e.g. by Lightning's ``BackboneFinetuning``) join the schedule.

A scheduler is built for the groups the optimizer has; torch's schedulers then crash
(``zip()`` too short, ``KeyError: 'max_lr'``) when a group is added at an unfreeze epoch.
:func:`adopt_new_groups` gives each new group its place in the schedule: the LR it was
added with, relative to the first group's LR at that moment, is its ratio from then on.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_clr._compat import per_group_lists
from lightning_clr.schedules.base import CYCLED_MOMENTUM_KEYS

_LR_KEYS = ("initial_lr", "max_lr", "min_lr")  # group entries torch's schedulers scale per group


def adopt_new_groups(scheduler: Any, optimizer: torch.optim.Optimizer, known: int) -> list[float]:
    """Extend ``scheduler`` to the groups of ``optimizer`` past the first ``known``.

    Args:
        scheduler: a scheduler built when the optimizer had ``known`` param groups.
        optimizer: the optimizer, now with more groups.
        known: how many groups the scheduler was built for.

    Returns:
        The LR ratio (to the first group) of each new group, in order.
    """
    groups = optimizer.param_groups
    first = groups[0]
    ratios = [g["lr"] / first["lr"] for g in groups[known:]]
    for name, values in per_group_lists(scheduler, known).items():
        scale = "lr" in name  # LRs scale with the group, momenta are shared
        values.extend(values[0] * r if scale else values[0] for r in ratios)
    for group, ratio in zip(groups[known:], ratios):
        group.update({k: first[k] * ratio for k in _LR_KEYS if k in first})
        if any(k in first for k in CYCLED_MOMENTUM_KEYS):  # the scheduler cycles momentum: the new group follows
            group.update({k: first[k] for k in (*CYCLED_MOMENTUM_KEYS, "momentum", "betas") if k in first})
    return ratios


def follow_outside_changes(scheduler: Any, optimizer: torch.optim.Optimizer, ratios: list[float]) -> list[int]:
    """Keep an LR another callback set between two steps, as that group's new place in the schedule.

    Lightning's ``BackboneFinetuning``, for one, raises the backbone group's LR at every epoch
    after the unfreeze. Without this the scheduler would overwrite it at the next step. A
    group whose LR is not the one the scheduler set last has every LR entry of the schedule
    scaled by the same factor, and its ratio in ``ratios`` with it (in place).

    Returns:
        The indices of the groups that changed.
    """
    last = scheduler.get_last_lr()
    lists = per_group_lists(scheduler, len(optimizer.param_groups))
    changed = []
    for g, (group, was) in enumerate(zip(optimizer.param_groups, last)):
        if was <= 0 or abs(group["lr"] - was) <= 1e-9 * was:
            continue
        factor = group["lr"] / was
        for name, values in lists.items():
            if "lr" in name:
                values[g] *= factor
        for key in _LR_KEYS:
            if key in group:
                group[key] *= factor
        ratios[g] *= factor
        changed.append(g)
    return changed
