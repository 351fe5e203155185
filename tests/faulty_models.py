"""Models for the fault tests, reachable from the command line as ``model._target_=tests.faulty_models.NAME``."""

from __future__ import annotations

import math
from typing import Any

import torch

from lightning_clr.models import Classifier


class NaNFromStep(Classifier):
    """The shipped classifier whose training loss is NaN from optimizer step ``nan_from_step`` on (1-based).

    The range test, which runs before step 1 with ``global_step == 0``, is not affected.

    Args:
        nan_from_step: the first optimizer step whose loss is NaN (>= 2).
        **kwargs: the arguments of :class:`~lightning_clr.models.Classifier`.
    """

    def __init__(self, nan_from_step: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert nan_from_step >= 2, nan_from_step
        self.nan_from_step = nan_from_step

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.trainer.global_step + 1 >= self.nan_from_step:
            return loss * math.nan
        return loss


class Ballast(Classifier):
    """The shipped classifier with ``ballast_mib`` MiB of extra weights, so each checkpoint write takes a while.

    Args:
        ballast_mib: size of the extra (trained, unused) parameter in MiB.
        **kwargs: the arguments of :class:`~lightning_clr.models.Classifier`.
    """

    def __init__(self, ballast_mib: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ballast = torch.nn.Parameter(torch.zeros(ballast_mib * 2**18))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return super().training_step(batch, batch_idx) + 0.0 * self.ballast[:1].sum()
