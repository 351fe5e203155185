"""A LightningDataModule over in-memory tensors (train / val split already made)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class DataFileError(ValueError):
    """A data file that cannot be what the data module reads; ``str()`` is one line naming the key and the fix."""


class TensorDataModule(L.LightningDataModule):
    """Serves ``(x, y)`` tensors held in memory; subclasses fill them in :meth:`_make`.

    Args:
        batch_size: mini-batch size per process.
        num_workers: data loader workers (0 loads in the main process, which is the
            fastest choice for data that already lives in memory).
    """

    num_classes: int
    input_length: int

    def __init__(self, batch_size: int = 100, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._train: TensorDataset | None = None
        self._val: TensorDataset | None = None

    def _make(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``x_train, y_train, x_val, y_val``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._train is None:
            x, y, x_val, y_val = self._make()
            self._train = TensorDataset(x, y)
            self._val = TensorDataset(x_val, y_val)

    def train_dataloader(self) -> DataLoader:
        assert self._train is not None, "call setup() first"
        return DataLoader(
            self._train,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        assert self._val is not None, "call setup() first"
        return DataLoader(
            self._val,
            batch_size=max(self.batch_size, 500),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
