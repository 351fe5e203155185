"""A user's own project in miniature: a LightningModule and a LightningDataModule that know
nothing of ``lightning_clr``. The README's "Your own model from the CLI" trains them with the
range test and a cyclical schedule, unchanged::

    PYTHONPATH=tests/userpkg python -m lightning_clr.run ~model +model._target_=mypkg.LitClassifier ...

:class:`TemplateModule` takes its network and optimizer as live objects and saves them as
hyperparameters, as lightning-hydra-template's modules do.
"""

from __future__ import annotations

import functools
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class BlobsDataModule(L.LightningDataModule):
    """Gaussian blobs: ``num_classes`` random centres in ``num_features`` dimensions, unit noise.

    Args:
        num_classes: classes (blobs).
        num_features: dimensions of a sample.
        num_train: training samples.
        num_val: validation samples.
        spread: distance scale of the centres (larger separates the classes more).
        batch_size: mini-batch size.
        seed: generator seed; the data never touches the global RNG.
    """

    def __init__(self, num_classes: int = 3, num_features: int = 16, num_train: int = 640, num_val: int = 320,
                 spread: float = 1.0, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, num_features
        self.num_train, self.num_val, self.spread = num_train, num_val, spread
        self.batch_size, self.seed = batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(self.seed)
        centres = self.spread * torch.randn(self.num_classes, self.num_features, generator=g)

        def sample(n: int) -> TensorDataset:
            y = torch.randint(self.num_classes, (n,), generator=g)
            return TensorDataset(centres[y] + torch.randn(n, self.num_features, generator=g), y)

        self.train_set, self.val_set = sample(self.num_train), sample(self.num_val)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)


class ClassifierSteps(L.LightningModule):
    """The training and validation steps both modules share: cross-entropy, ``train_loss``, ``val_loss``, ``val_acc``."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())


class LitClassifier(ClassifierSteps):
    """A two-layer MLP with Adam; logs ``train_loss``, ``val_loss`` and ``val_acc``.

    Args:
        num_classes: outputs.
        num_features: inputs.
        hidden: width of the hidden layer.
        lr: Adam's learning rate (the range test and the schedule replace it during ``fit``).
    """

    def __init__(self, num_classes: int, num_features: int = 16, hidden: int = 64, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layers = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class DenseNet(nn.Module):
    """A plain ``nn.Module`` that a config builds and hands to :class:`TemplateModule` (``model.net``).

    Args:
        num_features: inputs.
        hidden: width of the hidden layer.
        num_classes: outputs.
    """

    def __init__(self, num_features: int = 16, hidden: int = 32, num_classes: int = 3) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TemplateModule(ClassifierSteps):
    """A module in the style of lightning-hydra-template: the network, the optimizer and the scheduler
    come in as live objects (``_partial_: true`` for the last two), and ``save_hyperparameters()``
    stores them all, so the run's checkpoints pickle an ``nn.Module`` and a ``functools.partial``.

    Args:
        net: the network.
        optimizer: a partial of an optimizer class; called with ``params=``.
        scheduler: a partial of a scheduler class, called with ``optimizer=``; ``None``: no scheduler.
    """

    def __init__(self, net: nn.Module, optimizer: functools.partial,
                 scheduler: functools.partial | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> Any:
        optimizer = self.hparams.optimizer(params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = self.hparams.scheduler(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
