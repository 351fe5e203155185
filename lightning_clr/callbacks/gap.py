"""The generalization gap, validation minus training, logged once per epoch.

Tags: ``gap/loss`` (``val/loss - train/loss_epoch``) and ``gap/acc`` (``val/acc - train/acc``).
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class GeneralizationGap(Callback):
    """Logs ``gap/<name> = val/<name> - train/<name>`` once per epoch (validation minus training).

    Training metrics are read from their epoch aggregates (``train/loss_epoch`` when the
    module logs ``train/loss`` with ``on_step=True, on_epoch=True``, else ``train/loss``).

    Args:
        names: metric names present as ``train/<name>`` and ``val/<name>``.
    """

    def __init__(self, names: tuple[str, ...] = ("loss", "acc")) -> None:
        self._names = tuple(names)
        self._validated_epoch = -1

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validated_epoch != trainer.current_epoch:
            return  # no validation this epoch: a gap against last epoch's val metrics would mislead
        metrics = trainer.callback_metrics
        for name in self._names:
            train = metrics.get(f"train/{name}_epoch", metrics.get(f"train/{name}"))
            val = metrics.get(f"val/{name}")
            if train is not None and val is not None:
                pl_module.log(f"gap/{name}", float(val) - float(train), on_epoch=True, sync_dist=False)
