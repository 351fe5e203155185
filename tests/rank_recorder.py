"""A callback that writes what one DDP process saw to ``<folder>/rank<N>.json``.

Used by ``tests/test_distributed.py`` through the real entry point::

    python -m lightning_clr.run trainer=ddp_cpu ... \\
        +callbacks.record._target_=tests.rank_recorder.RankRecorder +callbacks.record.folder=DIR

Lightning starts the other processes with the same command, so every rank has one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L

from lightning_clr import LRRangeTest
from lightning_clr.range_test import steps


class RankRecorder(L.Callback):
    """Records the range-test result, the step counts, the LR of every param group at every
    training batch, and the batches ``training_step`` saw in the sweep and in the real fit
    (each as the sum of its inputs, which tells batches apart).

    Args:
        folder: where ``rank<global_rank>.json`` is written at the end of ``fit``.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.batches: list[float] = []
        self.record: dict[str, Any] = {"lrs": []}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        step = pl_module.training_step

        def recorded(batch: Any, *args: Any, **kwargs: Any) -> Any:
            self.batches.append(float(batch[0].double().sum()))
            return step(batch, *args, **kwargs)

        pl_module.training_step = recorded  # the sweep calls it too; hooks do not see the sweep

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # runs after LRRangeTest.on_fit_start: the finder is the first callback the entry point builds
        finder = next(c for c in trainer.callbacks if isinstance(c, LRRangeTest))
        self.record.update(
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            result=finder.result.to_dict(),
            sweep_batches=self.batches,
            num_training_batches=trainer.num_training_batches,
            steps_per_epoch=steps.steps_per_epoch(trainer),
            total_steps=trainer.estimated_stepping_batches,
        )
        self.batches = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        groups = trainer.optimizers[0].param_groups
        self.record["lrs"].append([trainer.current_epoch, batch_idx, [g["lr"] for g in groups]])

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["fit_batches"] = self.batches
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))
