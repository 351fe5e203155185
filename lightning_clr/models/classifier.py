"""A minimal LightningModule for classification, logging what the range test needs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]


class Classifier(L.LightningModule):
    """Cross-entropy classifier around any ``net`` mapping inputs to logits.

    Logs ``train/loss`` (per step and per epoch, as ``train/loss_step`` and
    ``train/loss_epoch``), ``train/acc``, ``val/loss`` and ``val/acc`` (per epoch).

    Args:
        net: the network.
        optimizer: a factory taking the parameters (or param groups) and returning an
            optimizer, e.g. ``functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)``
            (in Hydra: ``_partial_: true``). Defaults to SGD with momentum 0.9.
        num_classes: number of classes, for accuracy.
        head_lr_scale: if set, the last layer gets its own param group with LR
            ``head_lr_scale`` times the others' (discriminative LRs); the range test and
            the schedules keep that ratio.

    Example::

        model = Classifier(CNN1D(), partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        num_classes: int = 10,
        head_lr_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer or partial(torch.optim.SGD, lr=0.1, momentum=0.9)
        self.head_lr_scale = head_lr_scale
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.head_lr_scale is None:
            return self.optimizer_factory(self.parameters())
        head = list(self.net.modules())[-1]
        head_ids = {id(p) for p in head.parameters()}
        body = [p for p in self.parameters() if id(p) not in head_ids]
        optimizer = self.optimizer_factory([{"params": body}, {"params": list(head.parameters())}])
        optimizer.param_groups[1]["lr"] = optimizer.param_groups[0]["lr"] * self.head_lr_scale
        return optimizer
