"""Data modules: the embedded MNIST-1D default and a small synthetic set for tests."""

from lightning_clr.data.mnist1d import MNIST1DDataModule
from lightning_clr.data.synthetic import SyntheticDataModule

__all__ = ["MNIST1DDataModule", "SyntheticDataModule"]
